"""Cancellation over HTTP (``DELETE /v1/jobs/{id}``) at each stage, on real processes.

queued → never submitted; generating → polling stops and the job ends cancelled;
stored → 409 with a clear error and the job stays stored.
"""

from __future__ import annotations

import time
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

#: How long a cancelled job is watched for polls (three times the longest poll interval).
QUIET_S = 1.5


@pytest.fixture
def served(stack: Stack) -> Iterator[tuple[Stack, IngressServer]]:
    """The ingress on the session emulator; no worker yet."""
    server = start_ingress(stack, enable_ingress(stack))
    yield stack, server
    server.stop()


def test_a_job_cancelled_while_queued_is_never_submitted(
    served: tuple[Stack, IngressServer],
) -> None:
    # Given a queued job and no worker running
    stack, server = served
    with server.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "never", "quality": "1K"}).json()["job_id"]
        # When it is cancelled over HTTP
        response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    # Then a worker that starts afterwards consumes its message without creating a task
    stack.start_worker()
    wait_until(
        lambda: "nbq.generate" in stack.worker_logs() and "succeeded" in stack.worker_logs(),
        timeout_s=60,
        what="the worker to consume the generate message",
    )
    assert stack.emulator.stats()["creates_accepted"] == 0
    assert stack.producer().status(job_id).state.value == "cancelled"


def test_cancelling_a_stored_job_answers_409_and_keeps_it_stored(
    served: tuple[Stack, IngressServer],
) -> None:
    stack, server = served
    stack.start_worker()
    with server.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "kept", "quality": "1K"}).json()["job_id"]
        wait_for_state(server, job_id, {"stored"})
        response = client.delete(f"/v1/jobs/{job_id}")
        images = client.get(f"/v1/jobs/{job_id}/images")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "not_cancellable" and "already stored" in error["message"]
    assert stack.producer().status(job_id).state.value == "stored"
    assert images.status_code == 200 and len(images.json()["images"]) >= 1


@pytest.fixture
def slow(
    tmp_path: Path, redis_server: RedisServer, session_s3: S3Server
) -> Iterator[tuple[Stack, IngressServer]]:
    """Every task takes a minute (at the test time scale); callbacks off, so polls run."""
    stack = slow_stack(tmp_path, redis_server, session_s3, fixed_duration_s=6000)
    server = start_ingress(stack, enable_ingress(stack))
    stack.overrides.pop("NBQ_PUBLIC_CALLBACK_URL")  # workers poll; the ingress still serves
    stack.start_worker()
    yield stack, server
    server.stop()
    stack.stop_workers()
    stack.emulator.stop()


def test_a_job_cancelled_while_generating_stops_polling_and_ends_cancelled(
    slow: tuple[Stack, IngressServer],
) -> None:
    # Given a job whose task is being polled
    stack, server = slow
    with server.client() as client:
        job_id = client.post("/v1/jobs", json={"prompt": "slow", "quality": "1K"}).json()["job_id"]
        task_id = wait_for_state(server, job_id, {"generating"})["evolink_task_id"]

        def queries() -> int:
            return int(stack.emulator.stats()["queries_by_task"].get(task_id, 0))

        wait_until(lambda: queries() >= 2, timeout_s=30, what="polling to start")
        # When it is cancelled over HTTP
        response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    # Then the poll chain ends: over several poll intervals (at most 0.5 s each here) the
    # task is asked at most once more (a poll already in flight), and nothing is fetched
    settled = queries()
    time.sleep(QUIET_S)
    assert queries() <= settled + 1
    record = stack.producer().status(job_id)
    assert record.state.value == "cancelled"
    assert stack.emulator.stats()["file_downloads"] == 0
