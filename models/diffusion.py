"""Masked (discrete) diffusion over item tokens: the denoiser behind ReaSeq's beyond-log behaviours.

Vocabulary: 0 padding, 1..N items, N+1 the mask token (the backbone is built
with one extra "item" row for it, never scored). The denoiser is the shared
backbone with bidirectional attention: every position reads the whole
sequence, masked slots included. Positions count back from the newest token,
so slots appended after a history sit where the newest items sat in training.

Objective (MDLM / LLaDA): per sequence a mask ratio t ~ U(eps, 1); every token
of the sequence's region is replaced by the mask token with probability t; the
loss is the cross-entropy on the masked tokens, weighted 1/t and divided by the
region's size (an upper bound on the negative log-likelihood). Two regions:
  - the whole sequence, for ``1 - diffusion_response_share`` of the sequences
    (infilling anywhere);
  - the newest ``diffusion_response_items`` tokens with the older ones always
    visible, for the rest (LLaDA's supervised form, and what generation asks
    for: a visible history, masked future slots). At least one item stays
    visible.

As a ``SequentialModel`` its user state is the state of one mask slot after the
history, so validation (early stopping on NDCG@10), checkpoints, resume and the
MLflow pyfunc work as for every model. Generating several items by iterative
unmasking lives in ``llm_enrich.beyond_log`` (diffusers' scheduler).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from models.base import Batch, SequentialModel
from reaflow.settings import ModelSettings


class MaskedDiffusion(SequentialModel):
    name = "diffusion"

    def __init__(self, cfg: ModelSettings, num_items: int, knowledge: torch.Tensor | None = None):
        if knowledge is not None:  # the mask token has no knowledge: a zero row after the items
            knowledge = torch.cat([knowledge.float(), knowledge.new_zeros(1, knowledge.shape[1]).float()])
        super().__init__(cfg, num_items + 1, knowledge)
        self.num_items = num_items
        self.mask_id = num_items + 1

    # -- the denoiser ----------------------------------------------------------
    def denoise(self, tokens: torch.Tensor, last: int | None = None) -> torch.Tensor:
        """[B, L] tokens (left-padded, mask tokens anywhere) -> [B, L, N + 2] logits; padding and mask columns are -inf.

        ``last``: score only the newest ``last`` positions ([B, last, N + 2]);
        the item projection dominates the cost on a large catalogue.
        """
        with self.backbone.items.one_table():
            states, _ = self.backbone.encode(tokens, causal=False)
            logits = self.logits(states if last is None else states[:, -last:])
        logits[..., 0] = float("-inf")
        logits[..., self.mask_id] = float("-inf")
        return logits

    def with_slots(self, items: torch.Tensor, slots: int) -> torch.Tensor:
        """Append ``slots`` mask tokens, dropping the oldest items so that the result fits ``max_len``."""
        keep = self.cfg.max_len - slots
        if keep < 1:
            raise ValueError(f"{slots} slots leave no room for history in max_len {self.cfg.max_len}")
        items = items[:, -keep:]
        return torch.cat([items, items.new_full((items.shape[0], slots), self.mask_id)], dim=1)

    # -- the model interface ---------------------------------------------------
    def user_state(self, batch: Batch) -> torch.Tensor:
        states, _ = self.backbone.encode(self.with_slots(batch.items, 1), causal=False)
        return states[:, -1]

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        tokens = full_sequences(batch)[:, -self.cfg.max_len:]
        ratio = mask_ratios(tokens.shape[0], self.cfg.diffusion_min_mask_ratio, tokens.device)
        response = torch.rand(tokens.shape[0], device=tokens.device) < self.cfg.diffusion_response_share
        region = corruption_region(tokens, response, self.cfg.diffusion_response_items)
        noisy, masked = corrupt(tokens, ratio, region, self.mask_id)
        return {"diffusion": self.masked_loss(noisy, tokens, masked, ratio, region)}

    def masked_loss(self, noisy: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, ratio: torch.Tensor,
                    region: torch.Tensor) -> torch.Tensor:
        """Mean over sequences of (1/t) * sum of masked-token cross-entropies / region size."""
        states, _ = self.backbone.encode(noisy, causal=False)
        per_token = torch.zeros(tokens.shape, device=tokens.device)
        if masked.any():
            logits = self.logits(states[masked])[:, 1: self.num_items + 1]  # the catalogue's items: no padding, no mask token
            per_token = per_token.masked_scatter(masked, F.cross_entropy(logits, tokens[masked] - 1, reduction="none"))
        size = region.sum(1)
        per_row = per_token.sum(1) / ratio / size.clamp(min=1)
        return per_row[size > 0].mean() if (size > 0).any() else per_row.sum()


def full_sequences(batch: Batch) -> torch.Tensor:
    """The sequences a next-item batch was cut from: inputs plus the newest target, left-padded [B, L + 1]."""
    return torch.cat([batch.items, batch.targets[:, -1:]], dim=1)


def mask_ratios(rows: int, eps: float, device=None) -> torch.Tensor:
    """t ~ U(eps, 1) per sequence (eps keeps the 1/t weight bounded)."""
    return eps + (1 - eps) * torch.rand(rows, device=device)


def corruption_region(tokens: torch.Tensor, response: torch.Tensor, response_items: int) -> torch.Tensor:
    """Which tokens may be masked: every item, or for ``response`` rows only the newest ``response_items``.

    Sequences are left-padded, so a row's newest r items are its last r
    columns; r leaves at least one item visible.
    """
    real = tokens > 0
    length = real.sum(1, keepdim=True)
    r = torch.clamp(torch.minimum(length - 1, torch.full_like(length, response_items)), min=0)
    columns = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
    newest = columns >= tokens.shape[1] - r
    return real & torch.where(response[:, None], newest, torch.ones_like(newest))


def corrupt(tokens: torch.Tensor, ratio: torch.Tensor, region: torch.Tensor, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward process: each token of the region becomes the mask token with its row's probability ``ratio``."""
    masked = region & (torch.rand(tokens.shape, device=tokens.device) < ratio[:, None])
    return tokens.masked_fill(masked, mask_id), masked
