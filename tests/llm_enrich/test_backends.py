"""The OpenAI-compatible backend against a real local server (``transformers serve`` with the bundled model)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_enrich.backends import BackendError, ChatRequest, OpenAIBackend
from llm_enrich.enrich import enrich_catalog
from llm_enrich.schemas import Verdict
from llm_enrich.store import KnowledgeStore
from reaflow.lake import Lake

ITEM = {"item_id": "p1", "title": "Stainless steel chef knife, 8 inch", "categories": ["Home & Kitchen", "Cutlery"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def openai_server(llm_folder, tmp_path_factory):
    """A real OpenAI-compatible HTTP server on a free local port, serving the bundled model."""
    import httpx

    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(llm_folder), "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not start: {log.read_text()[-2000:]}")
            time.sleep(1)
        yield f"{base}/v1", str(llm_folder)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # real generation on 2 shared cores
def test_chat_completion_round_trip(openai_server):
    base_url, model = openai_server
    backend = OpenAIBackend(base_url, model, timeout_s=300)
    messages = [{"role": "user", "content": "Is a chef knife a kitchen tool? Answer as JSON."}]
    [answer] = backend.complete([ChatRequest(messages, Verdict.json_schema(), max_tokens=48)])
    assert answer.error is None and answer.text.strip()
    assert answer.completion_tokens > 0 and answer.prompt_tokens > 0 and answer.finish_reason in ("stop", "length")
    assert backend.usage.calls == 1 and backend.usage.completion_tokens == answer.completion_tokens


@pytest.mark.slow
@pytest.mark.timeout(1800)  # real generation on 2 shared cores
def test_enrichment_through_the_endpoint_stores_a_record_or_a_reason(openai_server, make_settings):
    base_url, model = openai_server
    settings = make_settings(llm={"backend": "openai", "base_url": base_url, "model": model, "timeout_s": 300},
                             enrich={"judge": False, "repair_attempts": 0, "max_seconds": 0})
    summary = enrich_catalog(settings, [ITEM], {}, "2024-01-05")
    assert summary["model_id"] == f"openai:{model}" and summary["llm_calls"] == 2  # planner + analyst
    assert summary["processed"] == 1 and summary["accepted"] + summary["quarantined"] == 1
    [row] = KnowledgeStore(Lake(settings.lake_root)).outcomes().values()
    assert row["record"] is not None or row["reason"].startswith("analyst: ")  # free text that misses the schema is quarantined


def test_unreachable_endpoint_stops_with_one_clear_line_and_stores_nothing(make_settings):
    settings = make_settings(llm={"backend": "openai", "base_url": f"http://127.0.0.1:{_free_port()}/v1", "model": "m",
                                  "retries": 0, "timeout_s": 5})
    with pytest.raises(BackendError, match=r"LLM backend openai:m failed on 1 of 1 requests: http://127\.0\.0\.1:\d+/v1: ConnectError"):
        enrich_catalog(settings, [ITEM], {}, "2024-01-05")
    assert KnowledgeStore(Lake(settings.lake_root)).outcomes() == {}  # the item waits for the next run


def test_openai_backend_needs_endpoint_and_model(make_settings):
    from reaflow.errors import SettingsError

    with pytest.raises(SettingsError, match="needs llm.base_url .* and llm.model"):
        make_settings(llm={"backend": "openai", "base_url": "http://127.0.0.1:1/v1"})
