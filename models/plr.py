"""PLR (arXiv 2601.03153): M parallel latent reasoning streams of T steps, mixed by a gate on the base state.

Stream m opens at ``h0 + trigger_m`` (a learned trigger vector); step t feeds
the stream's previous state plus the reasoning position embedding ``r_t``
back through the shared layers. Streams attend to the encoder's cached keys
and values and to their own earlier steps, never to each other; they are
stacked on the query axis, so M streams run as one batched step.

Objective: cross-entropy on ``h0 + z``, the base state plus the aggregated
reasoning ``z``, as inference scores (the paper trains on ``z`` alone, so the
model cannot route around the reasoning; see below), minus a
global regulariser (mean symmetric KL between the item distributions of the
streams' states, step by step), plus InfoNCE between two
dropout views of ``z``. Inference scores with ``h0 + z``.

Choices made here (where the paper leaves them open, and two departures):
- A step's state is the output of the full layer stack (every layer reused,
  with its own cached keys/values), as in ReaRec, not of one attention block.
- The mixture gate is ``softmax(W h0 + b)`` over streams; a stream's summary
  is the mean of its T step states. ``plr_mix: states`` gates every one of
  the T*M step states instead (the cheap alternative: a user's weight may
  fall on single steps). On Beauty it lowered test NDCG@10 seen removed by
  0.002 on both seeds run (bench/RESULTS.md): the default stays.
- The regulariser and the contrastive term are computed at the newest
  position of each training sequence; the recommendation loss at every
  position. The second contrastive view reruns the streams (not the encoder)
  with fresh dropout; rerunning the encoder too doubles the cost.
- ``plr_train_with_base``: train on ``h0 + z`` (the default, a departure)
  or on ``z`` alone (false, as the paper trains). On Beauty (full softmax,
  input dropout 0.2, 3 seeds) training on ``h0 + z`` lifted test NDCG@10
  from 0.0425 to 0.0484 and halved the epochs to the best one; at the daily
  defaults it is ahead at every epoch of the 10 a daily run allows
  (bench/RESULTS.md).
- The regulariser pushes apart only different streams at the same step
  (``plr_divergence_pairs: streams``, the default): a departure from the
  paper, which pushes apart all T*M states (``all``). With all pairs on
  Beauty the cap was met by the second step's states alone (ranking near
  randomly by themselves) while the two streams stayed alike
  (``bench/reasoning_states.py``); streams-only keeps them apart and ranked
  higher over three seeds (test NDCG@10 seen removed 0.0555 against 0.0552;
  bench/RESULTS.md).
- The divergence reward stops at ``divergence_cap`` nats per user: uncapped,
  on Beauty it ran away in epoch 12 (the term went from -0.15 to -11.4 in
  three epochs while validation NDCG@10 fell from 0.044 to 0.0004).
"""

from __future__ import annotations

import torch
from torch import nn

from models.base import Batch, SequentialModel, capped, info_nce, reasoning_slots, targeted
from reaflow.settings import ModelSettings


class PLR(SequentialModel):
    name = "plr"
    sequence_terms = frozenset({"kl_global", "contrastive"})

    def __init__(self, cfg: ModelSettings, num_items: int, knowledge: torch.Tensor | None = None):
        super().__init__(cfg, num_items, knowledge)
        self.triggers = nn.Parameter(torch.randn(cfg.plr_streams, cfg.hidden_size) * 0.02)
        self.steps = nn.Parameter(torch.randn(cfg.plr_steps, cfg.hidden_size) * 0.02)
        mixed = cfg.plr_streams * (cfg.plr_steps if cfg.plr_mix == "states" else 1)
        self.gate = nn.Linear(cfg.hidden_size, mixed)

    def streams(self, base: torch.Tensor, cache, everywhere: bool) -> torch.Tensor:
        """Stream states [T, B, M, Q, d] for Q query positions (all positions, or the newest)."""
        m = self.cfg.plr_streams
        anchor, positions = reasoning_slots(base, m, everywhere)
        q = anchor.shape[1]
        start = (anchor[:, None] + self.triggers[None, :, None]).reshape(base.shape[0], m * q, -1)
        steps, _ = self.backbone.chain(cache, start, positions, self.steps)
        return torch.stack(steps).view(len(steps), base.shape[0], m, q, -1)

    def mix(self, anchor: torch.Tensor, streams: torch.Tensor) -> torch.Tensor:
        """z = the gate's (on h0) weighted sum of the stream means or of every state: anchor [B, Q, d], streams [T, B, M, Q, d] -> [B, Q, d]."""
        weights = torch.softmax(self.gate(anchor), dim=-1)  # [B, Q, M] or [B, Q, T*M]
        if self.cfg.plr_mix == "states":
            mixed = streams.transpose(0, 1).flatten(1, 2)  # [B, T*M, Q, d], step-major
        else:
            mixed = streams.mean(0)  # [B, M, Q, d]
        return torch.einsum("bqs,bsqd->bqd", weights, mixed)

    def user_state(self, batch: Batch) -> torch.Tensor:
        base, cache = self.encode(batch)
        anchor = base[:, -1:]
        z = self.mix(anchor, self.streams(base, cache, everywhere=False))
        return (anchor + z)[:, -1]

    def named_states(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Base, every stream's every step, each stream alone in place of the mixture (h0 + its mean), and the score."""
        base, cache = self.encode(batch)
        anchor = base[:, -1:]
        streams = self.streams(base, cache, everywhere=False)  # [T, B, M, 1, d]
        named = {"base": anchor[:, -1]}
        for m in range(streams.shape[2]):
            named |= {f"stream_{m + 1}_step_{t + 1}": streams[t, :, m, -1] for t in range(streams.shape[0])}
            named[f"stream_{m + 1}"] = anchor[:, -1] + streams[:, :, m, -1].mean(0)
        return named | {"scored": (anchor + self.mix(anchor, streams))[:, -1]}

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        base, cache = self.encode(batch)
        streams = self.streams(base, cache, everywhere=True)
        z = self.mix(base, streams)
        scored = base + z if cfg.plr_train_with_base else z
        terms = {"rec": self.recommendation_loss(*targeted(scored, batch))}
        if cfg.plr_kl_weight > 0:
            newest = streams[..., -1, :]  # [T, B, M, d]
            steps, width = newest.shape[0], newest.shape[2]
            if cfg.plr_divergence_pairs == "all":
                groups = [[newest[t, :, m] for t in range(steps) for m in range(width)]]
            else:  # each step's streams among themselves
                groups = [[newest[t, :, m] for m in range(width)] for t in range(steps)]
            groups = [g for g in groups if len(g) > 1]
            if groups:
                terms["kl_global"] = -cfg.plr_kl_weight * torch.stack([symmetric_divergence(self, g) for g in groups]).mean()
        if cfg.plr_cl_weight > 0 and self.training:
            again = self.mix(base[:, -1:], self.streams(base, cache, everywhere=False))
            terms["contrastive"] = cfg.plr_cl_weight * info_nce(z[:, -1], again[:, -1], cfg.cl_temperature)
        return terms

    @torch.no_grad()
    def stream_spread(self, batch: Batch) -> list[float]:
        """Mean pairwise L2 distance between streams at each step (a collapse diagnostic)."""
        base, cache = self.encode(batch)
        streams = self.streams(base, cache, everywhere=False)[:, :, :, 0]  # [T, B, M, d]
        spread = []
        for step in streams:
            d = torch.cdist(step, step)  # [B, M, M]
            m = step.shape[1]
            spread.append(float(d.sum((-1, -2)).mean() / max(m * (m - 1), 1)))
        return spread


def symmetric_divergence(model: SequentialModel, states: list[torch.Tensor]) -> torch.Tensor:
    """Mean of KL(p_i || p_j) + KL(p_j || p_i) over unordered pairs of item distributions.

    Uses sum_{i<j} (p_i - p_j)(log p_i - log p_j) = n sum_i p_i log p_i - (sum_i p_i)(sum_i log p_i):
    one pass over the states instead of one per pair.
    """
    n = len(states)
    log_p = model.log_distributions(states)  # [n, B, N]
    p = log_p.exp()
    total = n * (p * log_p).sum((0, -1)) - (p.sum(0) * log_p.sum(0)).sum(-1)  # [B]
    return capped(total / (n * (n - 1) / 2), model.cfg.divergence_cap)
