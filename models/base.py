"""The one interface every sequential model implements, and the loss pieces they share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.backbone import Backbone, SequenceCache
from reaflow.settings import ModelSettings


@dataclass
class Batch:
    """Left-padded inputs and, for training, the next item at every input position (0: no target there)."""

    items: torch.Tensor  # [B, L]
    targets: torch.Tensor | None = None  # [B, L]
    token_types: torch.Tensor | None = None  # [B, L], 1 marks a generated (beyond-log) item

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)
        return Batch(move(self.items), move(self.targets), move(self.token_types))


class SequentialModel(nn.Module):
    """Encode item sequences to user states, score all items, compute the training loss.

    Subclasses implement ``user_state`` (inference: one vector per sequence,
    read at the newest item) and ``losses`` (training: named terms whose sum
    is minimised). Scores are dot products with the item table divided by
    ``temperature``; column 0 (padding) is never ranked.
    """

    name: str = ""
    #: The terms of ``losses`` taken once per sequence (at its newest item) rather than at every target
    #: position: the trainer's position weights may leave them out (``training.weight_sequence_terms_by_positions``).
    sequence_terms: frozenset[str] = frozenset()

    def __init__(self, cfg: ModelSettings, num_items: int, knowledge: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        self.backbone = Backbone(cfg, num_items, knowledge)
        self.epoch = 0  # set by the trainer; some terms switch on after a warm-up

    # -- the interface -------------------------------------------------------
    def user_state(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, batch: Batch, position_weight: float = 1.0, sequence_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        """The training objective and its named terms (as floats, for logging, before the weights).

        ``sequence_weight`` scales the ``sequence_terms``, ``position_weight`` every other term.
        """
        with self.backbone.items.one_table():
            terms = self.losses(batch)
        total = sum(value * (sequence_weight if name in self.sequence_terms else position_weight) for name, value in terms.items())
        return total, {name: float(value.detach()) for name, value in terms.items()}

    def named_states(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every state [B, d] the model could score a user with, by name; ``scored`` is the one it does.

        The reasoning models add their base and step (or stream) states: how
        each ranks alone, and how far a per-user pick of the best one would go,
        says whether the states differ usefully and how much a better
        aggregation of them could gain (``models.evaluate.state_breakdown``).
        """
        return {"scored": self.user_state(batch)}

    @torch.no_grad()
    def score(self, batch: Batch) -> torch.Tensor:
        """[B, num_items + 1] scores of every item; padding column is -inf."""
        with self.backbone.items.one_table():
            return self.item_scores(self.user_state(batch))

    @torch.no_grad()
    def score_each_state(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``score`` for each of ``named_states``."""
        with self.backbone.items.one_table():
            return {name: self.item_scores(state) for name, state in self.named_states(batch).items()}

    def item_scores(self, states: torch.Tensor) -> torch.Tensor:
        """Scores of the catalog's items; columns past it (a mask token's) are cropped."""
        scores = self.logits(states)[:, : self.num_items + 1]
        scores[:, 0] = float("-inf")
        return scores

    # -- shared pieces -------------------------------------------------------
    def encode(self, batch: Batch) -> tuple[torch.Tensor, SequenceCache]:
        return self.backbone.encode(batch.items, batch.token_types)

    def logits(self, states: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        temperature = temperature or self.cfg.temperature
        table = self.backbone.items.table()
        return self.plus_bias((states / temperature) @ table.T, slice(None), temperature)  # scale d columns, not N

    def plus_bias(self, scores: torch.Tensor, columns: torch.Tensor | slice, temperature: float = 1.0) -> torch.Tensor:
        """``scores`` plus the bias of the item each column scores (``model.item_bias``), at the scores' temperature."""
        bias = self.backbone.items.bias
        return scores if bias is None else scores + bias[columns] / temperature

    def recommendation_loss(self, states: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None = None,
                            temperature: float | None = None) -> torch.Tensor:
        """Cross-entropy of the next item: over all items, or over uniform negatives (``loss: sampled``).

        Sampled: every ``negative_group`` consecutive positions (0: the whole
        batch) share one draw of ``negatives`` items, so a step pushes down
        many more distinct items at the same number of dot products. A drawn
        negative that is the position's own target is left out. With
        ``exclude_seen`` the items of each position's ``history`` (from
        ``targeted``) are left out too, its target excepted.
        """
        temperature = temperature or self.cfg.temperature
        if self.cfg.exclude_seen and history is None:
            raise ValueError("model.exclude_seen needs each position's history (see targeted)")
        table = self.backbone.items.table()
        if self.cfg.loss == "full":
            logits = self.plus_bias((states / temperature) @ table[1:].T, slice(1, None), temperature)
            if self.cfg.exclude_seen:
                seen = torch.zeros(logits.shape[0], self.num_items + 1, dtype=torch.bool, device=logits.device)
                seen = seen.scatter_(1, history, True).scatter_(1, targets[:, None], False)[:, 1:]
                logits = logits.masked_fill(seen, float("-inf"))
            return F.cross_entropy(logits, targets - 1, label_smoothing=self.cfg.label_smoothing)
        n, hidden = states.shape
        group = self.cfg.negative_group or n
        groups = -(-n // group)
        negatives = torch.randint(1, self.num_items + 1, (groups, self.cfg.negatives), device=states.device)
        padded = F.pad(states, (0, 0, 0, groups * group - n)).view(groups, group, hidden)
        negative = torch.bmm(padded, table[negatives].transpose(1, 2)).reshape(groups * group, -1)[:n]
        own = negatives.repeat_interleave(group, dim=0)[:n]
        left_out = own == targets[:, None]
        if self.cfg.exclude_seen:
            left_out |= (own[:, :, None] == history[:, None, :]).any(-1)
        negative = self.plus_bias(negative, own).masked_fill(left_out, float("-inf"))
        positive = self.plus_bias((states * table[targets]).sum(-1, keepdim=True), targets[:, None])
        logits = torch.cat([positive, negative], dim=-1) / temperature
        return F.cross_entropy(logits, torch.zeros_like(targets))

    def log_distributions(self, states: list[torch.Tensor]) -> torch.Tensor:
        """Log item distributions [n, B, C] of several states, for the diversity regularisers.

        Over every item with ``loss: full``; with ``loss: sampled`` over one
        shared uniform sample of ``negatives`` items, the same approximation
        the recommendation loss makes (the full softmax per state would cost
        more than the rest of the step).
        """
        table = self.backbone.items.table()
        columns = slice(1, None)
        if self.cfg.loss == "sampled":
            columns = torch.randint(1, self.num_items + 1, (self.cfg.negatives,), device=table.device)
        logits = self.plus_bias(torch.stack(states) @ table[columns].T / self.cfg.temperature, columns, self.cfg.temperature)
        return F.log_softmax(logits, dim=-1)


def capped(divergence: torch.Tensor, cap: float) -> torch.Tensor:
    """Mean over users of a per-user divergence [B], each clipped at ``cap`` (0: no cap): a bounded reward."""
    return (divergence.clamp(max=cap) if cap > 0 else divergence).mean()


def targeted(states: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """States, targets and histories at the positions that have a next item: [P, d], [P], [P, L].

    A position's history is the logged items up to and including it (0
    elsewhere); generated beyond-log items are not part of it.
    """
    where = batch.targets > 0
    length = batch.items.shape[1]
    logged = batch.items if batch.token_types is None else batch.items * (batch.token_types == 0)
    upto = torch.ones(length, length, dtype=torch.bool, device=logged.device).tril()  # [position, item]
    return states[where], batch.targets[where], (logged[:, None, :] * upto)[where]


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE on cosine similarity: row i of ``a`` should pick row i of ``b`` (both directions)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    sim = a @ b.T / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels))


def reasoning_slots(base: torch.Tensor, chains: int, everywhere: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Where chains run: at every position (training) or at the newest item only (inference).

    Returns the anchor states [B, Q, d] (Q positions) and the sequence
    position of every slot, chains stacked: [chains * Q].
    """
    length = base.shape[1]
    if everywhere:
        return base, torch.arange(length, device=base.device).repeat(chains)
    return base[:, -1:], torch.full((chains,), length - 1, device=base.device, dtype=torch.long)
