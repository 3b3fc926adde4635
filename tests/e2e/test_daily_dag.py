"""The daily DAG end to end, as `make run` runs it, on tiny simulated data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reaflow.lake import Dataset, Lake


@pytest.mark.timeout(2400)  # two whole runs of two days, each with Spark, LLM enrichment, the denoiser and four trainings
def test_make_run_path_runs_the_daily_dag_twice(tmp_path, llm_folder):
    config = tmp_path / "reaflow.yaml"
    config.write_text(
        f"lake_root: {tmp_path / 'lake'}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "spark:\n  master: local[2]\n  shuffle_partitions: 4\n"
        "simulator:\n  days: 2\n  events: 6000\n  users: 400\n  items: 300\n"
        "model:\n  hidden_size: 16\n  inner_size: 32\n  layers: 1\n"
        "training:\n  max_epochs: 2\n  batch_size: 128\n  item_representation: metadata\n  beyond_log: true\n"
        "beyond_log:\n  items: 3\n  steps: 3\n  max_epochs: 2\n"
        f"llm:\n  model_path: {llm_folder}\n"
        "enrich:\n  max_items: 2\n  max_seconds: 0\n  judge: false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REAFLOW_", "AIRFLOW"))}
    command = [sys.executable, "-m", "reaflow.cli", "run", "--config", str(config)]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = json.loads(first.stdout[first.stdout.index("[\n"):])
    assert [r["ds"] for r in runs] == ["2024-01-01", "2024-01-02"]
    assert all("success" in r["state"] for r in runs)

    lake = Lake(tmp_path / "lake")
    for dataset in (Dataset.RAW_EVENTS, Dataset.CURATED_EVENTS, Dataset.QUARANTINE_EVENTS, Dataset.CURATED_SEQUENCES, Dataset.CURATED_SPLITS):
        assert lake.partitions(dataset) == ["2024-01-01", "2024-01-02"], dataset
    report = lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", "process_events.json"))
    assert report["balanced"] and report["rows_in"] == 3000
    assert lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", "sequences.json"))["mode"] == "incremental"
    trained = {name: lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", f"train_{name}.json"))
               for name in ("sasrec", "rearec-erl", "rearec-prl", "plr")}
    for name, summary in trained.items():
        assert summary["epochs"] == 2 and 0 <= summary["test_ndcg_10"] <= 1, name
        assert summary["item_representation"] == "metadata" and summary["knowledge_coverage"] > 0.9, name
        assert summary["beyond_log"], name
    generated = lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", "generate_beyond_log.json"))
    assert generated["users"] > 0 and generated["splits_written"] and generated["denoiser"]["epochs"] == 2
    assert lake.partitions(Dataset.BEYOND_LOG) == ["2024-01-01", "2024-01-02"]
    enriched = {ds: lake.read_json(lake.path(Dataset.REPORTS, ds, "enrich_items.json")) for ds in ("2024-01-01", "2024-01-02")}
    for ds, day in enriched.items():
        assert day["processed"] == 2 and day["deferred"] == day["pending"] - 2, ds
        assert day["accepted"] + day["quarantined"] == 2, ds
    assert lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", "embed_items.json"))["metadata"]["items"] > 0
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["reaflow"], output_format="list")
    assert {r.data.params["model"] for r in runs} == set(trained)
    assert {r.info.run_id for r in runs} >= {s["run_id"] for s in trained.values()}

    # Safe to run again: same reports.
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert second.returncode == 0, second.stderr[-3000:]
    assert lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", "process_events.json")) == report
    # Enrichment of the rerun: the two items done before are cached, two more are taken under the budget.
    rerun = lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", "enrich_items.json"))
    assert rerun["cached_before"] >= 4 and rerun["processed"] == 2
    # Training resumed from its finished checkpoints: same metrics, same MLflow runs.
    again = lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", "train_plr.json"))
    assert again["test_ndcg_10"] == trained["plr"]["test_ndcg_10"] and again["run_id"] == trained["plr"]["run_id"]
    regenerated = lake.read_json(lake.path(Dataset.REPORTS, "2024-01-02", "generate_beyond_log.json"))
    assert regenerated["denoiser"]["run_id"] == generated["denoiser"]["run_id"]
    assert Path(tmp_path / "state" / "airflow").is_dir()
