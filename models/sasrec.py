"""SASRec: the backbone alone; the user state is the newest position's state."""

from __future__ import annotations

import torch

from models.base import Batch, SequentialModel, targeted


class SASRec(SequentialModel):
    name = "sasrec"

    def user_state(self, batch: Batch) -> torch.Tensor:
        states, _ = self.encode(batch)
        return states[:, -1]

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        states, _ = self.encode(batch)
        return {"rec": self.recommendation_loss(*targeted(states, batch))}
