"""ReaRec (arXiv 2503.22675): K latent reasoning steps after the encoder, trained by ERL or PRL.

The newest state is fed back as a token with a learned reasoning position
embedding (one per step, separate from item positions); each step attends to
the cached sequence and the earlier steps, so the K+1 states (base + K steps)
cost K extra positions.

Choices made here (the paper and its released code leave them open or differ):
- Training runs a chain at every position of the sequence (equivalent to one
  sample per prefix, as the released code trains) at the cost of K extra
  passes over the sequence; inference runs one chain at the newest item.
- The diversity (ERL) and contrastive (PRL) terms are computed at the newest
  position of each training sequence (one per user per batch), the
  recommendation terms at every position: the regularisers need a softmax over
  all items per state, the dominant cost. PRL's noisy second chain runs at
  that newest position only.
- The released code reads ``self.noise_factor`` in ERL's forward, which ERL
  never defines (it fails once the warm-up ends), and adds PRL's ``cl_loss``
  in warm-up epochs before it is assigned. Here ERL uses no noise at all (its
  loss never read the noisy view) and PRL's contrastive term is zero until
  ``prl_cl_warmup_epochs`` have passed.
- A fed-back state gets the same input LayerNorm and dropout as an item
  token (``input_dropout``, by default the hidden dropout). The release
  hard-codes 0.2 there whatever its hidden dropout; on Beauty with hidden
  dropout 0.5, input dropout 0.2 lifted test NDCG@10 of PRL from 0.036 to
  0.046, PLR 0.038 to 0.043, ERL 0.045 to 0.048 (3 seeds; bench/RESULTS.md),
  SASRec unchanged.
- ERL's diversity reward stops at ``divergence_cap`` nats per user (see PLR,
  where the uncapped reward ran away).
- ``erl_state_loss_weight`` (0 by default, the paper's loss) adds a
  recommendation loss on each state alone: trained only through their mean
  (with the diversity cap off), the states each ranked far below it on
  Beauty, an ensemble of weak members. bench/RESULTS.md, "ERL with a loss on
  each state alone", has what the term did there.
- PRL's InfoNCE compares L2-normalised states with temperature
  ``cl_temperature`` (the release uses raw dot products over 0.07).
- Training needs a learning-rate warm-up (``training.warmup_steps``): on
  Beauty at lr 3e-3 without one, the chains stalled near their initial
  weights (ERL validation NDCG@10 0.006 after 4 epochs, SASRec 0.02); with
  200 warm-up steps ERL trains as fast as SASRec. PLR, whose contrastive term
  is on from the first step, trained without it.
"""

from __future__ import annotations

import torch
from torch import nn

from models.base import Batch, SequentialModel, capped, info_nce, reasoning_slots, targeted
from reaflow.settings import ModelSettings


class ReaRec(SequentialModel):
    """Shared by ERL and PRL: the K-step chain."""

    def __init__(self, cfg: ModelSettings, num_items: int, knowledge: torch.Tensor | None = None):
        super().__init__(cfg, num_items, knowledge)
        self.steps = nn.Parameter(torch.randn(cfg.reasoning_steps, cfg.hidden_size) * 0.02)

    def states(self, batch: Batch, everywhere: bool, noise: float = 0.0):
        """Base state and K step states, at every position [B, L, d] or at the newest [B, 1, d]."""
        base, cache = self.encode(batch)
        start, positions = reasoning_slots(base, 1, everywhere)
        steps, twins = self.backbone.chain(cache, start, positions, self.steps, noise)
        return [start] + steps, twins

    def scored(self, states: list[torch.Tensor]) -> torch.Tensor:
        """The state that scores, from the base and step states (ERL: their mean; PRL: the last)."""
        raise NotImplementedError

    def user_state(self, batch: Batch) -> torch.Tensor:
        states, _ = self.states(batch, everywhere=False)
        return self.scored(states)[:, -1]

    def named_states(self, batch: Batch) -> dict[str, torch.Tensor]:
        states, _ = self.states(batch, everywhere=False)
        named = {"base": states[0][:, -1]} | {f"step_{k}": s[:, -1] for k, s in enumerate(states[1:], 1)}
        return named | {"scored": self.scored(states)[:, -1]}


class ReaRecERL(ReaRec):
    """Ensemble reasoning: score with the mean of all K+1 states; reward diverse step distributions."""

    name = "rearec-erl"
    sequence_terms = frozenset({"kl_diversity"})

    def scored(self, states: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(states).mean(0)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        states, _ = self.states(batch, everywhere=True)
        terms = {"rec": self.recommendation_loss(*targeted(self.scored(states), batch))}
        if self.cfg.erl_state_loss_weight > 0:
            terms["states"] = self.cfg.erl_state_loss_weight * torch.stack(
                [self.recommendation_loss(*targeted(s, batch)) for s in states]).mean()
        if self.cfg.erl_kl_weight > 0:
            terms["kl_diversity"] = -self.cfg.erl_kl_weight * step_divergence(self, [s[:, -1] for s in states])
        return terms


class ReaRecPRL(ReaRec):
    """Progressive reasoning: later steps see sharper targets; the last step scores."""

    name = "rearec-prl"
    sequence_terms = frozenset({"contrastive"})

    def scored(self, states: list[torch.Tensor]) -> torch.Tensor:
        return states[-1]

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        contrast = cfg.prl_cl_weight > 0 and cfg.prl_noise > 0 and self.epoch >= cfg.prl_cl_warmup_epochs
        states, twins = self.states(batch, everywhere=True, noise=cfg.prl_noise if contrast else 0.0)
        k = len(states) - 1
        terms = {"rec": self.recommendation_loss(*targeted(states[-1], batch))}
        # Step j < K is trained at temperature tau * ratio^(K - j): softer targets early, the sharpest last.
        progressive = [self.recommendation_loss(*targeted(states[j], batch), temperature=cfg.temperature * cfg.prl_temperature_ratio ** (k - j))
                       for j in range(k)]
        terms["progressive"] = torch.stack(progressive).mean()
        if contrast:
            terms["contrastive"] = cfg.prl_cl_weight * torch.stack(
                [info_nce(clean[:, -1], noisy[:, -1], cfg.cl_temperature) for clean, noisy in zip(states[1:], twins, strict=True)]).mean()
        return terms


def step_divergence(model: SequentialModel, states: list[torch.Tensor]) -> torch.Tensor:
    """Mean KL(p_j || p_i) over ordered pairs i != j of step distributions, p_i held fixed (gradient through p_j only).

    Uses sum_{i != j} p_j (log p_j - log p_i) = sum_j p_j ((n - 1) log p_j - (S - log p_j)), S = sum_i log p_i.
    """
    n = len(states)
    log_p = model.log_distributions(states)  # [n, B, N]
    fixed = log_p.detach()
    others = fixed.sum(0, keepdim=True) - fixed
    total = (log_p.exp() * ((n - 1) * log_p - others)).sum((0, -1))  # [B]
    return capped(total / (n * (n - 1)), model.cfg.divergence_cap)
