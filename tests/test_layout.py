"""The architecture's arrows: dags -> components -> reaflow, never back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ("jobs", "features", "models", "llm_enrich", "validation")


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def test_top_level_folders_exist():
    for folder in ("dags", "jobs", "features", "models", "llm_enrich", "validation", "infra", "tests", "reaflow", "bench", "docs"):
        assert (REPO / folder).is_dir(), folder
    for file in ("pyproject.toml", "README.md", "Makefile", "constraints.txt", ".ci/run", "docs/ARCHITECTURE.md", "bench/RESULTS.md"):
        assert (REPO / file).is_file(), file


@pytest.mark.parametrize("path", _sources("reaflow"), ids=lambda p: str(p.relative_to(REPO)))
def test_core_imports_no_component(path):
    # The CLI is wiring like the DAGs: it may import components, but only inside its commands.
    imported = _imports(path, top_level_only=path.name == "cli.py")
    assert not imported & {*COMPONENTS, "dags"}, f"{path.name} imports {imported & {*COMPONENTS, 'dags'}}"


@pytest.mark.parametrize("path", [p for c in COMPONENTS for p in _sources(c)], ids=lambda p: str(p.relative_to(REPO)))
def test_components_never_import_dags(path):
    assert "dags" not in _imports(path, top_level_only=False)


def test_constraints_pin_the_tested_set():
    pins = dict(line.split("==", 1) for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line)
    assert pins["torch"] == "2.13.0"  # no local build label: CPU and CUDA builds both satisfy it
    assert pins["pyspark"] == pins["pyspark-client"] == "4.2.0"
    assert pins["apache-airflow"] == "3.3.2"
