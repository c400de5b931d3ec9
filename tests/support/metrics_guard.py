"""Keep in-process tests from writing project metrics to the default Redis.

The metric hooks write to ``get_settings().job_store_url``; a unit test that runs a stage
without configuring Redis would otherwise write to 127.0.0.1:6379. Recording is off for
every test; a test that checks metrics asks for ``metrics_on`` (after pointing
``NBQ_BROKER_URL``/``NBQ_REDIS_URL`` at its own redis-server).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nanobanana_queue.workers import metrics


@pytest.fixture(autouse=True)
def _metrics_off() -> Iterator[None]:
    metrics.set_enabled(False)
    yield
    metrics.set_enabled(False)
    metrics.set_shards(None)  # a test of the sharded layout forces it on one Redis
    metrics.reset()


@pytest.fixture
def metrics_on(_metrics_off: None) -> Iterator[None]:
    """Record metrics in this test (the client is re-created from current settings)."""
    metrics.reset()
    metrics.set_enabled(True)
    yield
    metrics.set_enabled(False)
    metrics.reset()
