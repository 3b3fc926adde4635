"""MLflow tracking of a training run: parameters, per-epoch metrics, plots, a data digest, the served model."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from models.data import SequenceData
from reaflow.settings import Settings


class Tracker:
    """One MLflow run per training run; a resumed training run continues its MLflow run."""

    def __init__(self, settings: Settings, experiment_suffix: str = ""):
        import mlflow

        self.settings = settings
        self.mlflow = mlflow
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        self.experiment_id = experiment_id(mlflow, settings, experiment_suffix)

    def start(self, run_id: str | None, run_name: str) -> str:
        if self.mlflow.active_run():
            self.mlflow.end_run()
        run = self.mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, experiment_id=self.experiment_id)
        return run.info.run_id

    def log_params(self, model_name: str, data: SequenceData, model) -> None:
        settings = self.settings
        params = {"model": model_name, **{f"model.{k}": v for k, v in settings.model.model_dump(mode="json").items()},
                  **{f"training.{k}": v for k, v in settings.training.model_dump(mode="json").items()},
                  "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
        self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        summary = data.summary()
        self.mlflow.set_tags({"data.digest": summary["digest"], "data.name": data.name, "model": model_name})
        self.mlflow.log_dict(summary, "data/summary.json")
        try:
            import pandas as pd

            digest = pd.DataFrame({"train_length": [len(s) for s in data.train]})
            dataset = self.mlflow.data.from_pandas(digest, name=data.name, digest=summary["digest"])
            self.mlflow.log_input(dataset, context="training")
        except Exception as exc:  # the summary and tag above already carry the digest
            self.mlflow.set_tag("data.input_logging", f"skipped: {exc.__class__.__name__}")

    def log_epoch(self, row: dict, step: int) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in row.items()}, step=step)

    def pause(self) -> None:
        """Leave the run unfinished (killed or interrupted); a resumed training run continues it."""
        self.mlflow.end_run(status="KILLED")

    def finish(self, result, model, data: SequenceData) -> None:
        from models.serving import log_recommender

        self.mlflow.log_metrics({f"best_valid_{k}": v for k, v in result.valid.items()})
        self.mlflow.log_metrics({f"test_{k}": v for k, v in result.test.items()})
        self.mlflow.log_metrics({"best_epoch": result.best_epoch, "train_seconds": result.seconds})
        self.mlflow.log_figure(learning_curves(result.history, model.name), "plots/learning_curves.png")
        self.mlflow.log_dict({"valid": result.valid, "test": result.test}, "metrics/evaluation.json")
        if hasattr(model, "stream_spread"):
            self.mlflow.log_metrics(stream_spread(model, data))
        log_recommender(model, data, self.settings.training.serve_top_k)
        self.mlflow.end_run()


def stream_spread(model, data: SequenceData, users: int = 1024) -> dict[str, float]:
    """Mean pairwise distance between PLR's streams at each step on test users (streams collapsing show as ~0)."""
    from models.data import history_batches

    model.eval()
    rows = []
    for _, batch in history_batches(data.test.histories[:users], 256, model.cfg.max_len):
        rows.append((batch.items.shape[0], model.stream_spread(batch)))
    total = sum(n for n, _ in rows)
    steps = len(rows[0][1]) if rows else 0
    return {f"stream_spread_step_{t + 1}": sum(n * spread[t] for n, spread in rows) / total for t in range(steps)}


def experiment_id(mlflow, settings: Settings, suffix: str = "") -> str:
    """The configured experiment (or ``<experiment>-<suffix>`` for another stage), with artifacts under ``mlflow_artifact_root``."""
    from mlflow.exceptions import MlflowException

    name = settings.mlflow.experiment + (f"-{suffix}" if suffix else "")
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=f"{settings.mlflow_artifact_root.rstrip('/')}/{name}")
    except MlflowException:  # created meanwhile by a parallel training task
        return mlflow.get_experiment_by_name(name).experiment_id


def learning_curves(history: list[dict], title: str):
    """Training loss and validation NDCG@10 (seen items kept and removed) and HR@10 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = list(range(1, len(history) + 1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [row.get("loss", float("nan")) for row in history], marker=".")
    left.set(xlabel="epoch", ylabel="training loss", title=title)
    for key, label in (("valid_ndcg_10", "NDCG@10"), ("valid_hr_10", "HR@10"),
                       ("valid_ndcg_10_seen_removed", "NDCG@10 seen removed")):
        right.plot(epochs, [row.get(key, float("nan")) for row in history], marker=".", label=label)
    right.set(xlabel="epoch", ylabel="validation")
    right.legend()
    fig.tight_layout()
    return fig


def sweep_plot(rows: list[dict], x: str, metric: str, title: str):
    """A metric against a swept hyperparameter (reasoning steps K, streams M), one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for model in sorted({r["model"] for r in rows}):
        points = sorted((r[x], r[metric]) for r in rows if r["model"] == model)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=model)
    ax.set(xlabel=x, ylabel=metric, title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def log_sweep(settings: Settings, rows: list[dict], x: str, metric: str, name: str) -> str:
    """One MLflow run holding a sweep's table and plot; returns its run id."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    with mlflow.start_run(run_name=name, experiment_id=experiment_id(mlflow, settings)) as run:
        mlflow.log_figure(sweep_plot(rows, x, metric, name), f"plots/{name}.png")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(rows, indent=2))
            mlflow.log_artifact(str(path), "sweeps")
        return run.info.run_id
