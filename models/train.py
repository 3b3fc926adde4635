"""One trainer for every model: AdamW, early stopping on a validation metric (``training.selection_metric``), a checkpoint every epoch, resume.

A run is a folder. After every epoch the trainer atomically writes
``checkpoint.pt`` (weights, optimiser, random state, best weights so far,
history, the MLflow run id). Started again on the same folder with the same
settings and data, it carries on from the last finished epoch and ends where
an uninterrupted run would have: batch order depends only on (seed, epoch)
and the random state is restored. A finished run given more epochs carries
on the same way.

With ``training.weight_average`` the trainer also keeps an exponential
moving average of the weights; that average, not the raw weights, is
validated, kept as the best and served.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from models import build_model
from models.data import SequenceData, position_weights, train_batches
from models.evaluate import evaluate
from reaflow.errors import ReaflowError
from reaflow.settings import Settings

CHECKPOINT = "checkpoint.pt"


class TrainingError(ReaflowError):
    """Training cannot go on (diverged, or a checkpoint that belongs to another run)."""


@dataclass
class TrainResult:
    model_name: str
    run_dir: str
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    test: dict[str, float]
    seconds: float
    run_id: str | None = None
    history: list[dict] = field(default_factory=list)
    #: The trained model at its best validation epoch (in memory only).
    model: torch.nn.Module | None = field(default=None, repr=False)

    def summary(self) -> dict:
        """Small enough for XCom and the CLI."""
        keep = ("ndcg_10", "ndcg_20", "hr_10", "hr_20", "ndcg_10_seen_removed", "hr_10_seen_removed")
        return {"model": self.model_name, "run_id": self.run_id, "best_epoch": self.best_epoch, "epochs": self.epochs_run,
                "seconds": round(self.seconds, 1), "valid_ndcg_10": self.valid.get("ndcg_10"),
                "valid_ndcg_10_seen_removed": self.valid.get("ndcg_10_seen_removed"),
                **{f"test_{k}": self.test.get(k) for k in keep}}


def train(settings: Settings, model_name: str, data: SequenceData, run_dir: str | Path, *,
          knowledge: torch.Tensor | None = None, track: bool = True, progress: bool | None = None,
          max_epochs: int | None = None, experiment_suffix: str = "") -> TrainResult:
    """Train ``model_name`` on ``data`` in ``run_dir`` (resuming if a checkpoint of the same run is there).

    Tracked in the MLflow experiment ``mlflow.experiment`` (the candidates), or
    ``<experiment>-<experiment_suffix>`` for models that are not candidates.
    """
    cfg, tcfg = settings.model, settings.training
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    device = torch.device(tcfg.device)
    fingerprint = _fingerprint(settings, model_name, data)
    _seed_everything(tcfg.seed)
    model = build_model(model_name, cfg, data.num_items, knowledge).to(device)
    optimizer = torch.optim.AdamW(_parameter_groups(model, tcfg.weight_decay, tcfg.weight_decay_scope),
                                  lr=tcfg.learning_rate, betas=(0.9, tcfg.adam_beta2))
    warmup = max(tcfg.warmup_steps, 1)
    state = _fresh_state()  # the schedule reads the plateau decay (``lr_scale``) from whichever state is current
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * state["lr_scale"])
    averaged = _weight_average(model, tcfg.weight_average)
    scored = model if averaged is None else averaged.module  # what is validated, kept and served
    state = _load_checkpoint(run_dir / CHECKPOINT, fingerprint, model, optimizer, scheduler, averaged)
    limit = max_epochs or tcfg.max_epochs
    done = state["epoch"] >= limit or state["bad_epochs"] >= tcfg.patience
    if done and state.get("finished") and (run_dir / "result.json").exists():
        model.load_state_dict(state["best_state"])
        return _finished_result(run_dir, model_name, state, model)  # a retried task: nothing left to do

    tracker = None
    if track:
        from models.tracking import Tracker

        tracker = Tracker(settings, experiment_suffix)
        state["run_id"] = tracker.start(state.get("run_id"), run_name=f"{model_name}-{data.name}")
        if state["epoch"] == 0:
            tracker.log_params(model_name, data, model)

    selection = data.valid.sample(tcfg.valid_users, tcfg.seed) if tcfg.valid_users else data.valid
    try:
        while state["epoch"] < limit and state["bad_epochs"] < tcfg.patience:
            epoch = state["epoch"]
            epoch_started = time.perf_counter()
            row = _train_epoch(model, optimizer, scheduler, averaged, data, settings, epoch, device, progress)
            row.update({f"valid_{k}": v for k, v in evaluate(scored, selection, tcfg.cutoffs, device=str(device)).items()})
            score = row[f"valid_{tcfg.selection_metric}"]
            if score > state["best_score"]:
                state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0,
                             best_state={k: v.detach().clone() for k, v in scored.state_dict().items()})
            else:
                state["bad_epochs"] += 1
            if _decays_now(state["bad_epochs"], tcfg.lr_decay_patience, tcfg.patience):
                state["lr_scale"] *= tcfg.lr_decay_factor
                _apply_schedule(optimizer, scheduler)
            state["epoch"] = epoch + 1
            state["seconds"] += time.perf_counter() - epoch_started
            state["history"].append(row)
            _save_checkpoint(run_dir / CHECKPOINT, state, fingerprint, model, optimizer, scheduler, averaged)
            if tracker:
                tracker.log_epoch(row, step=epoch + 1)
    finally:
        if tracker and state["epoch"] < limit and state["bad_epochs"] < tcfg.patience:
            tracker.pause()  # interrupted: the run stays open for the resume

    best = copy.deepcopy(scored)  # the checkpoint keeps the last weights, so a longer run carries on from them
    if state["best_state"] is not None:
        best.load_state_dict(state["best_state"])
    counts = data.item_counts()
    valid = evaluate(best, data.valid, tcfg.cutoffs, device=str(device))
    test = evaluate(best, data.test, tcfg.cutoffs, item_counts=counts, head_share=tcfg.head_share,
                    rare_below=tcfg.rare_below, device=str(device), breakdowns=True)
    result = TrainResult(model_name, str(run_dir), state["best_epoch"], state["epoch"], valid, test,
                         state["seconds"], state.get("run_id"), state["history"], best)
    (run_dir / "result.json").write_text(json.dumps({**result.summary(), "valid": valid, "test": test}, indent=2))
    if tracker:
        tracker.finish(result, best, data)
    state["finished"] = True
    _save_checkpoint(run_dir / CHECKPOINT, state, fingerprint, model, optimizer, scheduler, averaged)
    return result


def _finished_result(run_dir: Path, model_name: str, state: dict, model) -> TrainResult:
    saved = json.loads((run_dir / "result.json").read_text())
    return TrainResult(model_name, str(run_dir), state["best_epoch"], state["epoch"], saved["valid"], saved["test"],
                       state["seconds"], state.get("run_id"), state["history"], model)


def _train_epoch(model, optimizer, scheduler, averaged, data: SequenceData, settings: Settings, epoch: int, device, progress) -> dict:
    tcfg = settings.training
    model.train()
    model.epoch = epoch
    batches = train_batches(data.train, tcfg.batch_size, settings.model.max_len, tcfg.seed, epoch, data.train_context,
                            tcfg.batch_by_length)
    weights = position_weights(batches) if tcfg.weight_batches_by_positions else [1.0] * len(batches)
    sums: dict[str, float] = {}
    sequences = 0
    started = time.perf_counter()
    bar = tqdm(batches, desc=f"{model.name} epoch {epoch + 1}", leave=False, disable=progress is False if progress is not None else None)
    for batch, weight in zip(bar, weights, strict=True):
        batch = batch.to(device)
        loss, terms = model.loss(batch, weight, weight if tcfg.weight_sequence_terms_by_positions else 1.0)
        if not torch.isfinite(loss):
            raise TrainingError(f"{model.name}: loss became {float(loss)} in epoch {epoch + 1}; lower training.learning_rate or the regulariser weights")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        scheduler.step()
        if averaged is not None:
            averaged.update_parameters(model)
        sequences += batch.items.shape[0]
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value * batch.items.shape[0]
    seconds = time.perf_counter() - started
    row = {f"loss_{name}": value / max(sequences, 1) for name, value in sums.items()}
    row["loss"] = sum(row.values())
    row.update(epoch_seconds=seconds, sequences_per_second=sequences / max(seconds, 1e-9),
               learning_rate=optimizer.param_groups[0]["lr"])
    return row


def _decays_now(bad_epochs: int, decay_patience: int, patience: int) -> bool:
    """Whether the learning rate steps down after this epoch: every ``decay_patience`` stalled epochs, unless the run stops."""
    return bool(decay_patience) and bad_epochs > 0 and bad_epochs % decay_patience == 0 and bad_epochs < patience


def _apply_schedule(optimizer, scheduler) -> None:
    """Set the rates the scheduler gives now, so a decay acts from the next step rather than one step late."""
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


def _fingerprint(settings: Settings, model_name: str, data: SequenceData) -> str:
    """What makes two runs the same run (everything that changes the result, not the epoch limit)."""
    training = settings.training.model_dump(mode="json", exclude={"max_epochs", "models", "device", "threads", "serve_top_k"})
    return json.dumps({"model": model_name, "config": settings.model.model_dump(mode="json"), "training": training,
                       "data": data.digest()}, sort_keys=True)


def _fingerprint_changes(saved: str | None, current: str, shown: int = 5) -> str:
    """Which settings differ between two fingerprints, as ``key: saved -> now`` (``absent`` where one lacks the key)."""
    try:
        before, after = (_flatten({_SHOWN_AS.get(k, k): v for k, v in json.loads(f).items()}) for f in (saved, current))
    except (TypeError, ValueError, AttributeError):
        return "the checkpoint's settings cannot be read"

    def show(values: dict, key: str) -> str:
        return json.dumps(values[key]) if key in values else "absent"

    changed = [f"{key}: {show(before, key)} -> {show(after, key)}" for key in sorted(before.keys() | after.keys())
               if key not in before or key not in after or before[key] != after[key]]
    more = f", and {len(changed) - shown} more" if len(changed) > shown else ""
    return "; ".join(changed[:shown]) + more


# The fingerprint's top-level keys as the settings name them.
_SHOWN_AS = {"model": "model name", "config": "model", "data": "data digest"}


def _flatten(tree: dict, prefix: str = "") -> dict:
    """``{"model": {"hidden_size": 64}}`` -> ``{"model.hidden_size": 64}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fresh_state() -> dict:
    return {"epoch": 0, "best_score": float("-inf"), "best_epoch": 0, "bad_epochs": 0, "best_state": None,
            "history": [], "seconds": 0.0, "run_id": None, "lr_scale": 1.0}


def _parameter_groups(model: torch.nn.Module, weight_decay: float, scope: str) -> list[dict]:
    """AdamW groups: with scope ``matrices``, 1-D parameters (LayerNorm gains, biases) are not decayed."""
    params = list(model.parameters())
    if scope == "all":
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _weight_average(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights (``training.weight_average``), or None when off."""
    if not decay:
        return None
    ema = torch.optim.swa_utils.get_ema_multi_avg_fn(decay)
    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema, use_buffers=True)


def _load_checkpoint(path: Path, fingerprint: str, model, optimizer, scheduler, averaged) -> dict:
    if not path.exists():
        return _fresh_state()
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a checkpoint is replaced atomically, so this is a foreign or damaged file
        raise TrainingError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}); remove it to start over") from None
    if saved.get("fingerprint") != fingerprint:
        raise TrainingError(f"checkpoint {path} belongs to a run with other settings or data "
                            f"({_fingerprint_changes(saved.get('fingerprint'), fingerprint)}); use another run folder or remove it")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if averaged is not None:
        averaged.load_state_dict(saved["averaged"])
    torch.set_rng_state(saved["torch_rng"])
    np.random.set_state(saved["numpy_rng"])
    random.setstate(saved["python_rng"])
    return saved["state"]


def _save_checkpoint(path: Path, state: dict, fingerprint: str, model, optimizer, scheduler, averaged) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"fingerprint": fingerprint, "state": state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "averaged": averaged.state_dict() if averaged is not None else None, "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}, tmp)
    os.replace(tmp, path)
