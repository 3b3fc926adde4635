"""The bundled LLM loaded once per test session (the tests use it for real, never a mock)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def local_backend(llm_folder):
    from llm_enrich.backends import LocalBackend

    return LocalBackend(llm_folder, "local:smollm2-test", batch_size=4)


class Counting:
    """Counts the requests that reach a real backend; can stop the run after some calls (a crash)."""

    def __init__(self, backend, crash_after: int | None = None):
        self.backend, self.crash_after, self.requests, self.calls = backend, crash_after, 0, 0
        self.model_id, self.usage = backend.model_id, backend.usage

    def complete(self, requests):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        self.requests += len(requests)
        return self.backend.complete(requests)


@pytest.fixture
def counting():
    return Counting
