"""Keep in-process tests from writing project metrics to the default Redis.

The metric hooks write to ``get_settings().job_store_url``; a unit test that runs a stage
without configuring Redis would otherwise write to 127.0.0.1:6379. Recording is off for
every test; a test that checks metrics asks for ``metrics_on`` (after pointing
``NBQ_BROKER_URL``/``NBQ_REDIS_URL`` at its own redis-server).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from nanobanana_queue.workers import metrics

T = TypeVar("T")


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


def settled(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 10.0) -> T:
    """``read()`` once ``done`` holds for it or, at the deadline, its last value (to
    assert on). A worker writes its finished tasks' metric events up to
    NBQ_METRICS_FLUSH_S (default 1 s) after them, so a test that reads the metrics right
    after a job ended polls for what it expects instead of reading once."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)
