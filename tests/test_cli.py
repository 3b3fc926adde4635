"""The command line as a user meets it: help everywhere, one-line errors, safe reruns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["simulate", "ingest", "run", "train", "enrich", "generate", "settings"]


def reaflow(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reaflow.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(command):
    result = reaflow(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "--source", "netflix"], "error: invalid settings: source.name: unknown dataset 'netflix'"),
        (["ingest", "--source", "ml-100k", "--path", "/no/such/folder"], "error: /no/such/folder not found: expected a local copy of ml-100k"),
        (["simulate", "--from", "2024-02-30"], "error: logical date '2024-02-30' is not YYYY-MM-DD"),
        (["simulate", "--users", "0"], "error: invalid settings: simulator.users: Input should be greater than or equal to 10"),
        (["settings", "--config", "/no/such.yaml"], "error: config file /no/such.yaml not found"),
        (["generate", "--ds", "2024-01-01", "--steps", "0"], "error: invalid settings: beyond_log.steps"),
        (["generate", "--ds", "2024-01-01", "--items", "50"], "error: invalid settings: beyond_log.items 50 leaves no room"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message, tmp_path):
    result = reaflow(*args, "--lake", str(tmp_path / "lake"))
    assert result.returncode == 2
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr


def test_generate_before_the_sequences_exist_names_what_is_missing(tmp_path):
    result = reaflow("generate", "--ds", "2024-01-01", "--lake", str(tmp_path / "lake"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {tmp_path / 'lake'}/curated/splits/ds=2024-01-01 is missing or incomplete; run build_sequences for 2024-01-01 first"


def test_train_warns_of_skipped_lines_and_still_trains(tmp_path):
    lines = [f"u{u} " + " ".join(f"i{(u + k) % 7}" for k in range(5)) for u in range(12)]
    (tmp_path / "seq.txt").write_text("\n".join(lines[:6] + ["lonely-user"] + lines[6:]) + "\n")
    result = reaflow("train", "--model", "sasrec", "--data", str(tmp_path / "seq.txt"), "--epochs", "1", "--no-track",
                     "--run-dir", str(tmp_path / "run"), "--lake", str(tmp_path / "lake"))
    assert result.returncode == 0, result.stderr
    assert f"warning: skipped 1 line of {tmp_path / 'seq.txt'} (a user id without items)" in result.stderr
    assert json.loads(result.stdout)["best_epoch"] == 1


def test_wrong_setting_in_environment(tmp_path):
    import os

    env = {**os.environ, "REAFLOW_SPARK__MASTER": "local[two]"}
    result = reaflow("settings", env=env)
    assert result.returncode == 2 and "spark.master: unknown Spark master 'local[two]'" in result.stderr


def test_simulate_then_rerun_is_identical(tmp_path):
    args = ["simulate", "--lake", str(tmp_path / "lake"), "--days", "2", "--events", "4000", "--users", "300", "--items", "200"]
    first = reaflow(*args)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["days"] == ["2024-01-01", "2024-01-02"] and summary["lines"] == 4000
    snapshot = {p: p.read_bytes() for p in sorted((tmp_path / "lake").rglob("*")) if p.is_file()}
    assert reaflow(*args).returncode == 0
    assert snapshot == {p: p.read_bytes() for p in sorted((tmp_path / "lake").rglob("*")) if p.is_file()}


@pytest.mark.timeout(1500)
def test_run_uses_the_configured_source(tmp_path):
    config = tmp_path / "reaflow.yaml"
    config.write_text(f"lake_root: {tmp_path / 'lake'}\nsimulator:\n  days: 2\n  events: 3000\n  users: 200\n  items: 100\n"
                      "enrich:\n  enabled: false\ntraining:\n  max_epochs: 2\n")
    result = reaflow("run", "--config", str(config), timeout=1200)  # the whole DAG, two days: minutes on a busy machine
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "lake" / "raw" / "events").iterdir()) == ["ds=2024-01-01", "ds=2024-01-02"]


def test_settings_hide_the_api_key(tmp_path):
    import os

    env = {**os.environ, "REAFLOW_LLM__BACKEND": "openai", "REAFLOW_LLM__BASE_URL": "http://127.0.0.1:9/v1",
           "REAFLOW_LLM__MODEL": "m", "REAFLOW_LLM__API_KEY": "sk-secret"}
    result = reaflow("settings", env=env)
    assert result.returncode == 0, result.stderr
    assert "sk-secret" not in result.stdout and json.loads(result.stdout)["llm"]["api_key"] == "***"
