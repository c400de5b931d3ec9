"""Retries of the entry task and long quota pauses never cost a job or a second create."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import assert_nothing_lost, assert_one_create_each
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def _job_ids(stack: Stack) -> list[str]:
    keys = stack.redis.client().keys("nbq:job:*")
    return sorted(_text(k).split(":", 2)[2] for k in keys)


def _text(key: bytes | str) -> str:
    """A key the client returned (bytes: it does not decode replies)."""
    return key if isinstance(key, str) else key.decode()


def test_a_retried_generate_sent_without_a_job_id_stays_one_job_with_one_create(
    stack: Stack,
) -> None:
    # Given another service that sends nbq.generate without a job id, and a create that
    # first answers 503 (so the entry task retries)
    stack.emulator.add_fault(endpoint="create", action="status", status=503, count=1)
    stack.start_worker()
    app = create_app(stack.settings())
    app.send_task("nbq.generate", kwargs={"request": {"prompt": "no id given", "quality": "1K"}})
    # When the job completes
    wait_until(lambda: len(_job_ids(stack)) >= 1, timeout_s=30, what="a job record")
    producer = stack.producer()
    records = stack.wait_all(producer, _job_ids(stack), timeout_s=60)
    # Then the retry found the same record: one job, one paid create
    assert len(records) == 1 and {r.state for r in records.values()} == {JobState.STORED}
    assert len(_job_ids(stack)) == 1
    assert_one_create_each(stack, list(records))


def test_a_long_quota_pause_does_not_use_up_the_retry_budget_for_later_errors(
    stack: Stack,
) -> None:
    # Given a budget of one transient retry and a quota pause that lasts many waits
    stack.overrides.update(
        {"NBQ_MAX_TRANSIENT_RETRIES": "1", "NBQ_BREAKER_PROBE_INTERVAL_S": "0.3"}
    )
    stack.emulator.set_credits(0)
    stack.start_worker()
    producer = stack.producer()
    job = producer.enqueue({"prompt": "patient", "quality": "1K"})
    wait_until(
        lambda: stack.emulator.stats()["creates_rejected"].get("402", 0) >= 4,
        timeout_s=60,
        what="several quota probes",
    )
    # When credits come back but the next create meets one 503
    stack.emulator.add_fault(endpoint="create", action="status", status=503, count=1)
    stack.emulator.set_credits(None)
    records = stack.wait_all(producer, [job.job_id], timeout_s=90)
    # Then the job is stored: the quota waits did not count as transient retries
    assert_nothing_lost(records)
    assert records[job.job_id].state is JobState.STORED
    assert_one_create_each(stack, [job.job_id])
