"""The DAG's training task: train one candidate model on the day's curated splits."""

from __future__ import annotations

from pathlib import Path

from reaflow.lake import ds_str
from reaflow.settings import Settings


def run_dir(settings: Settings, ds: str, model_name: str) -> Path:
    """Local folder of one day's training run (checkpoints live here, so a retried task resumes)."""
    return settings.state_dir / "training" / ds_str(ds) / model_name


def train_candidate(settings: Settings, ds: str, model_name: str) -> dict:
    """Train ``model_name`` on the curated splits of ``ds``; returns the run summary (MLflow run id, test metrics)."""
    from models.data import beyond_log_contexts, item_knowledge, load_lake_splits, with_beyond_log
    from models.train import train
    from reaflow.lake import Dataset, Lake

    data = load_lake_splits(settings, ds_str(ds), settings.training.protocol)
    knowledge, coverage = item_knowledge(settings, data)
    if settings.training.beyond_log:
        data = with_beyond_log(data, *beyond_log_contexts(settings, ds_str(ds), data))
    result = train(settings, model_name, data, run_dir(settings, ds, model_name), knowledge=knowledge, progress=False)
    summary = {**result.summary(), "ds": ds_str(ds), "data": data.summary(),
               "item_representation": settings.training.item_representation, "knowledge_coverage": coverage,
               "beyond_log": settings.training.beyond_log}
    lake = Lake.from_settings(settings)
    lake.write_json(lake.path(Dataset.REPORTS, ds, f"train_{model_name}.json"), {**summary, "valid": result.valid, "test": result.test})
    return summary
