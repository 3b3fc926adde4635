"""Full-ranking evaluation: every item is a candidate; HR@K and NDCG@K, with and without seen items removed.

Published numbers use both conventions, so both are always reported. With
``seen removed`` every history item is excluded from the ranking (the S3-Rec
convention, including a target the user had seen before). Ties count in the
target's favour (rank = number of items scored strictly higher).
"""

from __future__ import annotations

import numpy as np
import torch

from models.base import SequentialModel
from models.data import EvalSet, history_batches

#: History-length buckets of the breakdown (lower bounds, inclusive).
LENGTH_BUCKETS = (1, 5, 10, 20, 50)


@torch.no_grad()
def target_ranks(model: SequentialModel, data: EvalSet, *, batch_size: int = 512, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each target among all items: (seen kept, seen removed)."""
    model.eval()
    kept = np.zeros(len(data), dtype=np.int64)
    removed = np.zeros(len(data), dtype=np.int64)
    for rows, batch in history_batches(data.histories, batch_size, model.cfg.max_len, data.context):
        kept[rows], removed[rows] = ranks_of(model.score(batch.to(device)), data, rows)
    return kept, removed


def ranks_of(scores: torch.Tensor, data: EvalSet, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of ``data``'s targets at ``rows`` under ``scores`` [len(rows), num_items + 1]: (seen kept, seen removed).

    Seen items' scores are overwritten in place: ``scores`` is used up.
    """
    scores = scores.float()
    targets = torch.as_tensor(data.targets[rows], device=scores.device)
    target_scores = scores.gather(1, targets[:, None])
    kept = (scores > target_scores).sum(1).cpu().numpy()
    remove_seen(scores, [data.histories[i] for i in rows])
    target_scores = scores.gather(1, targets[:, None])
    # A removed target (seen before) ranks below everything.
    beaten = (scores > target_scores).sum(1)
    beaten = torch.where(torch.isinf(target_scores[:, 0]), torch.full_like(beaten, scores.shape[1]), beaten)
    return kept, beaten.cpu().numpy()


@torch.no_grad()
def state_breakdown(model: SequentialModel, data: EvalSet, cutoffs, *, batch_size: int = 512,
                    device: str = "cpu") -> dict[str, dict[str, float]]:
    """Seen-removed metrics of each of the model's ``named_states`` alone, and of an ``oracle`` that takes each
    user's best-ranked state.

    ``oracle`` above ``scored`` bounds what a better aggregation of the same
    states could gain; ``best_share`` is the share of users for whom a state
    ranks the target best (ties count for every state tied).
    """
    model.eval()
    ranks: dict[str, np.ndarray] = {}
    for rows, batch in history_batches(data.histories, batch_size, model.cfg.max_len, data.context):
        for name, scores in model.score_each_state(batch.to(device)).items():
            ranks.setdefault(name, np.zeros(len(data), dtype=np.int64))[rows] = ranks_of(scores, data, rows)[1]
    if not ranks:
        return {}
    ranks["oracle"] = np.min(np.stack(list(ranks.values())), axis=0)
    return {name: {**ranking_metrics(r, cutoffs), "best_share": float((r == ranks["oracle"]).mean()) if len(r) else float("nan")}
            for name, r in ranks.items()}


def remove_seen(scores: torch.Tensor, histories: list[np.ndarray]) -> None:
    """Give every item of row r's history the score -inf, in place (it is never ranked again)."""
    for r, history in enumerate(histories):
        scores[r, torch.as_tensor(history, device=scores.device)] = float("-inf")


def ranking_metrics(ranks: np.ndarray, cutoffs: list[int] | tuple[int, ...]) -> dict[str, float]:
    """HR@K (target in the top K) and NDCG@K (1/log2(rank + 2) when in the top K), averaged."""
    out = {}
    if len(ranks) == 0:
        return {f"{m}_{k}": float("nan") for k in cutoffs for m in ("hr", "ndcg")}
    for k in cutoffs:
        hit = ranks < k
        out[f"hr_{k}"] = float(hit.mean())
        out[f"ndcg_{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    return out


def evaluate(model: SequentialModel, data: EvalSet, cutoffs, *, item_counts: np.ndarray | None = None,
             head_share: float = 0.2, rare_below: int = 5, batch_size: int = 512, device: str = "cpu",
             breakdowns: bool = False) -> dict[str, float]:
    """Flat metrics: ``ndcg_10``, ``ndcg_10_seen_removed``; with ``breakdowns`` also by history length and by target
    popularity: head/tail (share of the catalogue) and rare (fewer than ``rare_below`` training interactions)."""
    kept, removed = target_ranks(model, data, batch_size=batch_size, device=device)
    out = ranking_metrics(kept, cutoffs)
    out.update({f"{name}_seen_removed": value for name, value in ranking_metrics(removed, cutoffs).items()})
    if not breakdowns:
        return out
    lengths = np.fromiter((len(h) for h in data.histories), dtype=np.int64, count=len(data))
    bounds = list(LENGTH_BUCKETS) + [np.iinfo(np.int64).max]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        chosen = (lengths >= lo) & (lengths < hi)
        label = f"len_{lo}_{hi - 1}" if hi != bounds[-1] else f"len_{lo}_plus"
        out[f"{label}_users"] = int(chosen.sum())
        if chosen.any():
            out.update({f"{label}_{name}": value for name, value in ranking_metrics(kept[chosen], cutoffs).items()})
    if item_counts is not None:
        tail = long_tail_items(item_counts, head_share)
        is_tail = tail[data.targets]
        is_rare = item_counts[data.targets] < rare_below
        for label, chosen in (("tail", is_tail), ("head", ~is_tail), ("rare", is_rare)):
            out[f"{label}_users"] = int(chosen.sum())
            if chosen.any():
                out.update({f"{label}_{name}": value for name, value in ranking_metrics(kept[chosen], cutoffs).items()})
    return out


def long_tail_items(item_counts: np.ndarray, head_share: float) -> np.ndarray:
    """Boolean per item index: True for items outside the ``head_share`` most popular (by training count)."""
    n = len(item_counts) - 1
    head = max(1, int(round(n * head_share)))
    order = np.argsort(-item_counts[1:], kind="stable") + 1
    tail = np.ones(len(item_counts), dtype=bool)
    tail[order[:head]] = False
    tail[0] = False
    return tail
