"""Fixtures for the Evolink client tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_metrics(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | str, str]]:
    """Record ``metrics.api_call`` in memory instead of writing to the settings' Redis.

    The real hook writes to ``NBQ_REDIS_URL`` (default: the shared Redis on 6379), which
    tests must never touch; each test module that makes client calls uses this fixture.
    """
    calls: list[tuple[str, int | str, str]] = []

    def record(endpoint: str, status: int | str, code: str = "") -> None:
        calls.append((endpoint, status, code))

    monkeypatch.setattr("nanobanana_queue.workers.metrics.api_call", record)
    return calls
