"""Run a DAG in-process on the embedded defaults (``dag.test()``), for ``make run`` and tests.

Airflow reads its configuration when first imported, so the environment is
set here before any Airflow import: its home and metadata database under
``state_dir`` (or ``airflow.sql_alchemy_conn``), no example DAGs, the repo's
``dags/`` folder.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from reaflow.errors import ReaflowError
from reaflow.settings import Settings

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"


def airflow_env(settings: Settings) -> dict[str, str]:
    home = (settings.state_dir / "airflow").resolve()
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.airflow_sql_alchemy_conn,
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


def run_dag_days(settings: Settings, dag_id: str, days: list[str], settings_env: dict[str, str]) -> list[dict]:
    """Run ``dag_id`` once per logical date, in order; stop at the first failed run."""
    env = airflow_env(settings)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    os.environ.update(settings_env)
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
    if migrate.returncode != 0:
        raise ReaflowError(f"airflow db migrate failed: {migrate.stderr.strip().splitlines()[-1] if migrate.stderr.strip() else migrate.returncode}")

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise ReaflowError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    results = []
    for ds in days:
        logical = dt.datetime.combine(dt.date.fromisoformat(ds), dt.time(), dt.timezone.utc)
        run = dag.test(logical_date=logical)
        state = str(getattr(run, "state", "unknown"))
        results.append({"ds": ds, "state": state})
        if "success" not in state:
            raise ReaflowError(f"{dag_id} failed for {ds} (state {state}); see the task logs above")
    return results
