"""The job store loses its data mid-flight (FLUSHALL, an empty failover): real worker
processes, redis-servers, the emulator and S3.

With the broker on its own Redis every poll message survives, so every paid job is
rescued from the task id its message carries. With one Redis for both, whatever the worker
still holds (countdown polls) is rescued and the rest is reported; never silent.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.metrics_exporter import build_registry
from tests.faults.helpers import enqueue
from tests.support.metrics_guard import settled
from tests.support.procs import start, wait_until
from tests.support.redis_server import RedisServer
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

JOBS = 6
#: Polls wait at least this long: the flush lands while every job is generating.
HOLD = {"NBQ_POLL_MIN_INTERVAL_S": "4", "NBQ_STORE_EPOCH_CHECK_S": "0.3"}


@pytest.fixture
def store_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(dir=tmp_path / "store")
    server.dir.mkdir()
    server.start()
    yield server
    server.stop()


def _metric(stack: Stack, name: str) -> float:
    text = generate_latest(build_registry(stack.settings())).decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _settled_metric(stack: Stack, name: str, expected: float) -> float:
    """The metric once it reached ``expected`` (a worker writes its events within
    NBQ_METRICS_FLUSH_S), or its value at the deadline."""
    return settled(lambda: _metric(stack, name), lambda v: v >= expected)


def _all_generating(producer: Producer, job_ids: list[str]) -> bool:
    return all(
        (r := producer.runtime.store.get(j)) is not None
        and r.state is JobState.GENERATING
        and bool(r.evolink_task_id)
        for j in job_ids
    )


def _stored(producer: Producer, job_id: str) -> bool:
    record = producer.lookup(job_id)
    return record is not None and record.state is JobState.STORED


def test_a_store_flushed_mid_flight_with_a_separate_broker_loses_no_paid_job(
    stack: Stack, store_server: RedisServer
) -> None:
    stack.overrides.update({**HOLD, "NBQ_REDIS_URL": store_server.url})
    stack.start_worker()
    producer = stack.producer()
    job_ids = enqueue(producer, JOBS, prompt="store flush")
    wait_until(lambda: _all_generating(producer, job_ids), timeout_s=60, what="all generating")

    store_server.client().flushall()

    wait_until(
        lambda: all(_stored(producer, j) for j in job_ids), timeout_s=90, what="jobs rescued"
    )
    for job_id in job_ids:
        record = producer.status(job_id)  # `nbq status` answers for each
        assert record.state is JobState.STORED and record.recovered_at is not None
        manifest = json.loads(
            stack.s3.minio().get_object(stack.s3.bucket, f"images/{job_id}/manifest.json").read()
        )
        assert manifest["recovered"] is True and manifest["evolink_task_id"]
        assert [o.key for o in record.objects] == [o["key"] for o in manifest["objects"]]
    assert stack.emulator.stats()["creates_accepted"] == JOBS  # rescued, never re-created
    logs = stack.worker_logs()
    assert re.search(r"\[error\s*\] store_reset_detected", logs), logs[-3000:]
    assert f"127.0.0.1:{store_server.port}" in logs
    # (the worker writes its metric events within NBQ_METRICS_FLUSH_S)
    assert _settled_metric(stack, "nbq_store_resets_total", 1) == 1
    assert _settled_metric(stack, "nbq_jobs_rescued_total", JOBS) == JOBS


def test_one_redis_flushed_mid_flight_reports_the_loss_loudly(stack: Stack) -> None:
    stack.overrides.update(HOLD)
    stack.start_worker()
    producer = stack.producer()
    job_ids = enqueue(producer, JOBS, prompt="single flush")
    wait_until(lambda: _all_generating(producer, job_ids), timeout_s=60, what="all generating")
    time.sleep(1.5)  # a watcher pass (reconciler loop, 1 s) counts them; none is needed

    stack.redis.client().flushall()

    def settled() -> bool:
        line = _reset_line(stack)
        return line is not None and all(
            _stored(producer, j) or producer.lookup(j) is None for j in job_ids
        )

    wait_until(settled, timeout_s=90, what="the reset to be reported")
    line = _reset_line(stack)
    assert line is not None
    assert f"paid_jobs_at_last_check={JOBS}" in line  # the count of what was at risk
    assert _settled_metric(stack, "nbq_store_resets_total", 1) == 1
    rescued = [j for j in job_ids if _stored(producer, j)]
    # Each job is either rescued (its countdown poll was held by the worker) or counted
    # in the ERROR line above; none disappears without a word.
    assert _settled_metric(stack, "nbq_jobs_rescued_total", len(rescued)) == len(rescued)


def _reset_line(stack: Stack) -> str | None:
    for line in stack.worker_logs().splitlines():
        if "store_reset_detected" in line:
            return line
    return None


def _worker_cmd() -> list[str]:
    return [
        sys.executable,
        "-m",
        "nanobanana_queue.producers.cli.main",
        "worker",
        "--queues",
        "submit",
    ]


def test_a_worker_refuses_to_start_on_a_volatile_store_and_starts_with_the_override(
    stack: Stack, tmp_path: Path
) -> None:
    volatile = RedisServer(dir=tmp_path / "volatile", extra_args=["--appendonly", "no"])
    volatile.dir.mkdir()
    volatile.start()
    try:
        stack.redis = volatile
        log = tmp_path / "refused.log"
        proc: subprocess.Popen[bytes] = start(_worker_cmd(), env=stack.env(), log=log)
        assert proc.wait(timeout=60) == 78
        lines = [line for line in log.read_text().splitlines() if "refused to start" in line]
        assert len(lines) == 1 and "appendonly" in lines[0], log.read_text()[-2000:]
        stack.start_worker(queues="submit", extra_env={"NBQ_ALLOW_VOLATILE_STORE": "true"})
        assert "store_volatile_allowed" in stack.worker_logs()
    finally:
        stack.stop_workers()
        volatile.stop()


def test_a_worker_refuses_an_evicting_store(stack: Stack, tmp_path: Path) -> None:
    evicting = RedisServer(
        dir=tmp_path / "evicting", extra_args=["--maxmemory-policy", "allkeys-lru"]
    )
    evicting.dir.mkdir()
    evicting.start()
    try:
        stack.redis = evicting
        log = tmp_path / "refused.log"
        proc = start(_worker_cmd(), env=stack.env(), log=log)
        assert proc.wait(timeout=60) == 78
        assert "maxmemory-policy=allkeys-lru" in log.read_text()
    finally:
        evicting.stop()
