"""The jobs run unchanged on a real Spark standalone cluster (master + worker on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.catalog import process_catalog
from jobs.ingest import ingest
from jobs.process_events import process_events
from reaflow.lake import Dataset, Lake

REPO = Path(__file__).resolve().parents[2]
DS = "2024-01-01"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def standalone_cluster(tmp_path):
    from pyspark.find_spark_home import _find_spark_home

    home = _find_spark_home()
    spark_class = os.path.join(home, "bin", "spark-class")
    port, master_ui, worker_ui = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOG_DIR": str(tmp_path / "logs"), "SPARK_WORKER_DIR": str(tmp_path / "work"),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    url = f"spark://127.0.0.1:{port}"
    logs = tmp_path / "cluster.log"
    with open(logs, "wb") as log:
        master = subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                                   "--webui-port", str(master_ui)], stdout=log, stderr=log, env=env)
        _wait_for_port(port)
        worker = subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
                                   "--memory", "2g", "--webui-port", str(worker_ui), url], stdout=log, stderr=log, env=env)
        try:
            _wait_for_port(worker_ui)
            yield url, env, home
        finally:
            for proc in (worker, master):
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_jobs_through_spark_submit_on_a_standalone_cluster(standalone_cluster, tmp_path, spark):
    url, env, home = standalone_cluster
    config = tmp_path / "reaflow.yaml"
    config.write_text(f"lake_root: {tmp_path / 'cluster-lake'}\nsimulator:\n  days: 1\n  events: 5000\n  users: 300\n  items: 200\n"
                      "spark:\n  shuffle_partitions: 4\n  driver_memory: 1g\n  executor_memory: 1g\n")
    from reaflow.settings import load_settings

    settings = load_settings(config)
    ingest(settings)
    local_root = tmp_path / "local-lake"
    shutil.copytree(settings.lake_root, local_root)

    submit = os.path.join(home, "bin", "spark-submit")
    reports = {}
    for job in ("jobs/catalog.py", "jobs/process_events.py"):
        result = subprocess.run([submit, "--master", url, "--conf", "spark.ui.enabled=false", str(REPO / job), "--ds", DS, "--config", str(config)],
                                capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        reports[job] = json.loads(result.stdout[result.stdout.index("{"):])
    cluster_report = reports["jobs/process_events.py"]
    assert cluster_report["balanced"] and cluster_report["rows_in"] == 5000

    # The same job in local mode on a copy of the raw data gives the same accounting.
    local = load_settings(config, lake_root=str(local_root))
    process_catalog(local, DS, spark=spark)
    assert process_events(local, DS, spark=spark) == cluster_report
    assert Lake(settings.lake_root).partitions(Dataset.CURATED_EVENTS) == [DS]
    assert list((tmp_path / "work").glob("app-*")), "no application ran on the cluster's worker"
