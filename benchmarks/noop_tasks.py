"""B1's baseline: a chain of three no-op Celery tasks per job, on the pipeline's broker.

Its own Celery app with the pipeline's configuration (JSON, prefetch 1, task events on,
same broker) but one queue, ``bench-noop``, so the only difference from the real pipeline
is the work each task does. The last task counts finished chains in Redis.

    celery -A benchmarks.noop_tasks worker -Q bench-noop -P threads -c 8
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import chain

from benchmarks.baseline_app import baseline_app
from nanobanana_queue.workers.settings import get_settings

QUEUE = "bench-noop"
DONE_KEY = "bench:noop:done"

app = baseline_app("nbq-bench-noop", QUEUE)
_redis: dict[int, redis.Redis] = {}


def _client() -> redis.Redis:
    pid = os.getpid()
    if pid not in _redis:
        _redis[pid] = redis.Redis.from_url(get_settings().broker_url)
    return _redis[pid]


@app.task(name="bench.noop.first")  # type: ignore[untyped-decorator]
def first(job: int) -> int:
    return job


@app.task(name="bench.noop.second")  # type: ignore[untyped-decorator]
def second(job: int) -> int:
    return job


@app.task(name="bench.noop.third")  # type: ignore[untyped-decorator]
def third(job: int) -> int:
    _client().incr(DONE_KEY)
    return job


def send_chain(job: int) -> Any:
    """One baseline job: first → second → third."""
    return chain(first.s(job), second.s(), third.s()).apply_async()
