"""The DAG folder parses cleanly, fast, and without heavy imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dagbag_loads_without_errors_and_heavy_imports(tmp_path):
    script = textwrap.dedent(
        f"""
        import json, os, sys
        os.environ["AIRFLOW_HOME"] = {str(tmp_path)!r}
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "sqlite:///{tmp_path}/airflow.db"
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        dag = bag.dags["daily_retraining"]
        heavy = sorted(m for m in ("torch", "pyspark", "transformers", "diffusers", "mlflow", "feast", "great_expectations") if m in sys.modules)
        print(json.dumps({{
            "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
            "dags": sorted(bag.dag_ids),
            "tasks": {{t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}},
            "schedule": str(dag.schedule), "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
            "heavy": heavy,
        }}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert "daily_retraining" in info["dags"]
    assert info["tasks"] == {
        "ingest": ["process_catalog"],
        "process_catalog": ["process_events"],
        "process_events": ["build_sequences"],
        "build_sequences": ["enrich_items"],
        "enrich_items": ["embed_items"],
        "embed_items": ["generate_beyond_log"],
        "generate_beyond_log": ["train_plr", "train_rearec_erl", "train_rearec_prl", "train_sasrec"],
        "train_sasrec": [],
        "train_rearec_erl": [],
        "train_rearec_prl": [],
        "train_plr": [],
    }
    assert info["max_active_runs"] == 1 and info["catchup"] is False
    assert info["heavy"] == [], f"imported at parse time: {info['heavy']}"
