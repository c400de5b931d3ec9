"""Evolink callbacks end to end: ingress (``nbq serve``), workers, emulator, S3.

With callbacks on, the first poll is a late fallback, so a job costs about one task query
(the re-fetch a callback triggers); with callbacks dropped, polling still finishes every
job; forged callbacks change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.producers.ingress.serving import (
    IngressServer,
    enable_ingress,
    slow_stack,
    start_ingress,
    wait_for_state,
)
from tests.support.procs import wait_until
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

JOBS = 20


@pytest.fixture
def served(stack: Stack) -> Iterator[tuple[Stack, IngressServer]]:
    port = enable_ingress(stack)
    server = start_ingress(stack, port)
    stack.start_worker()
    yield stack, server
    server.stop()


def _submit_jobs(server: IngressServer, count: int) -> list[str]:
    with server.client() as client:
        return [
            client.post("/v1/jobs", json={"prompt": f"callback image {i}", "quality": "1K"}).json()[
                "job_id"
            ]
            for i in range(count)
        ]


def _wait_stored(stack: Stack, job_ids: list[str]) -> None:
    records = stack.wait_all(stack.producer(), job_ids)
    assert {r.state.value for r in records.values()} == {"stored"}, {
        k: (r.state, r.error) for k, r in records.items() if r.state.value != "stored"
    }


def test_twenty_jobs_with_callbacks_cost_at_most_one_query_each(
    served: tuple[Stack, IngressServer],
) -> None:
    stack, server = served
    job_ids = _submit_jobs(server, JOBS)
    _wait_stored(stack, job_ids)
    stats = stack.emulator.stats()
    polls_per_job = stats["queries_total"] / JOBS
    print(
        f"callbacks on: {stats['queries_total']} queries for {JOBS} jobs "
        f"= {polls_per_job:.2f} per job; callbacks {stats['callbacks']}"
    )
    assert stats["callbacks"]["delivered"] == JOBS
    assert polls_per_job <= 1.0
    assert stats["creates_accepted"] == JOBS


def test_with_every_callback_dropped_polling_still_stores_every_job(
    served: tuple[Stack, IngressServer],
) -> None:
    stack, server = served
    stack.emulator.add_fault(endpoint="callback", action="drop")
    job_ids = _submit_jobs(server, JOBS)
    _wait_stored(stack, job_ids)
    stats = stack.emulator.stats()
    print(f"callbacks dropped: {stats['queries_total']} queries for {JOBS} jobs")
    assert stats["callbacks"]["dropped"] == JOBS and stats["callbacks"]["delivered"] == 0
    assert stats["queries_total"] >= JOBS


@pytest.fixture
def slow(
    tmp_path: Path, redis_server: RedisServer, session_s3: S3Server
) -> Iterator[tuple[Stack, IngressServer]]:
    stack = slow_stack(tmp_path, redis_server, session_s3, fixed_duration_s=6000)
    port = enable_ingress(stack)
    server = start_ingress(stack, port)
    stack.start_worker()
    yield stack, server
    server.stop()
    stack.stop_workers()
    stack.emulator.stop()


def test_forged_callbacks_change_nothing(slow: tuple[Stack, IngressServer]) -> None:
    # Given a job whose task is still processing (every task takes a minute here)
    stack, server = slow
    with server.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "slow", "quality": "1K"}).json()["job_id"]
    job = wait_for_state(server, job_id, {"generating"})
    task_id = job["evolink_task_id"]
    evil = {
        "id": task_id,
        "status": "completed",
        "progress": 100,
        "results": [f"{stack.emulator.url}/evil.png"],
    }
    # When callbacks arrive with a wrong token, for an unknown job, and with a valid token
    # but a body claiming completion
    assert server.callback(job_id, evil, token="0" * 64).status_code == 404
    assert server.callback("no-such-job", evil, token="0" * 64).status_code == 404
    queries_before = stack.emulator.stats()["queries_by_task"].get(task_id, 0)
    answer = server.callback(job_id, evil)
    assert answer.status_code == 202 and answer.json() == {"outcome": "poll_sent"}
    # Then the claim is checked by a re-fetch, which finds the task still processing
    wait_until(
        lambda: stack.emulator.stats()["queries_by_task"].get(task_id, 0) > queries_before,
        timeout_s=30,
        what="the re-fetch",
    )
    after = wait_for_state(server, job_id, {"generating"})
    assert after["result_count"] == 0 and after["objects"] == []
    stats = stack.emulator.stats()
    assert stats["file_downloads"] == 0
    assert stack.s3.keys(f"images/{job_id}/") == []
    assert stack.producer().runtime.store.get("no-such-job") is None
