"""Sequential recommenders (one interface, a shared SASRec backbone), their training, evaluation and tracking."""

from __future__ import annotations

from models.base import Batch, SequentialModel
from models.diffusion import MaskedDiffusion
from models.plr import PLR
from models.rearec import ReaRecERL, ReaRecPRL
from models.sasrec import SASRec

MODELS: dict[str, type[SequentialModel]] = {cls.name: cls for cls in (SASRec, ReaRecERL, ReaRecPRL, PLR, MaskedDiffusion)}


def build_model(name: str, cfg, num_items: int, knowledge=None) -> SequentialModel:
    """The model called ``name``: a candidate (``reaflow.settings.MODEL_NAMES``) or the beyond-log denoiser (``diffusion``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return MODELS[name](cfg, num_items, knowledge)


__all__ = ["MODELS", "Batch", "SequentialModel", "build_model"]
