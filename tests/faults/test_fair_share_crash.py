"""A worker SIGKILLed while jobs wait on the fair-share lists: none lost, none paid twice.

Waiting jobs are ``queued`` records on their producer's list; the dead worker held some
submit messages (slots) unacknowledged and may have taken a job it never claimed (a
lease). The lease goes back in line after its time, the reconciler re-sends a queued
job's missing message, and the create path's own guards (the one-winner claim, the
idempotency key) keep every job to one create. Also: the lists on a Sentinel store.
"""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    assert_nothing_lost,
    assert_one_create_each,
    creates_per_job,
    kill_hard,
)
from tests.faults.test_sentinel_failover import sentinel_stack  # noqa: F401 - a fixture
from tests.integration.test_fair_share import check_backlog_does_not_starve_another_producer
from tests.support.procs import wait_until
from tests.support.stack import Stack


def test_a_worker_killed_while_jobs_wait_loses_none_and_pays_none_twice(
    fast_stack: Stack,
) -> None:
    stack = fast_stack
    stack.overrides["NBQ_CREATES_PER_S"] = "2"
    producer = stack.producer()
    request = {"prompt": "fair crash", "quality": "1K"}
    job_ids = [producer.enqueue(request, producer="bulk").job_id for _ in range(8)]
    job_ids += [producer.enqueue(request, producer="shop").job_id for _ in range(3)]
    victim = stack.start_worker(name="victim")

    # When the worker is SIGKILLed while some jobs are created and others still wait
    def some_created_some_waiting() -> bool:
        states = {producer.status(j).state for j in job_ids}
        return JobState.QUEUED in states and len(states) > 1

    wait_until(some_created_some_waiting, timeout_s=60, interval_s=0.05, what="jobs waiting")
    kill_hard(victim)
    # And a new worker takes over
    stack.start_worker(name="rescuer")
    records = stack.wait_all(producer, job_ids, timeout_s=180)
    # Then every job is stored with exactly one paid create — except any the kill caught
    # inside its create (the poll above cannot stop a create starting between its look and
    # the kill; at 2 creates/s at most the limiter's burst of them): such a job fails
    # ``outcome_unknown``, having paid at most once, never resent (docs/failure-handling.md;
    # CI caught one such job once)
    caught = {j for j, r in records.items() if r.error and r.error.code == "outcome_unknown"}
    assert len(caught) <= 2, caught
    assert_nothing_lost(records, allowed=(JobState.STORED, JobState.FAILED))
    stored = [j for j in job_ids if j not in caught]
    assert all(records[j].state is JobState.STORED for j in stored), records
    if caught:
        _one_create_each_at_most(stack, stored, caught)
    else:
        assert_one_create_each(stack, stored)


def _one_create_each_at_most(stack: Stack, stored: list[str], caught: set[str]) -> None:
    """Stored jobs paid exactly once; a job caught mid-create at most once; no key twice."""
    assert stack.emulator.stats()["duplicate_idempotency_keys"] == []
    per_job = creates_per_job(stack, [*stored, *caught])
    assert all(per_job[j] == 1 for j in stored), per_job
    assert all(per_job[j] <= 1 for j in caught), per_job


@pytest.mark.integration
def test_fair_share_on_a_sentinel_store(sentinel_stack: Stack) -> None:  # noqa: F811
    check_backlog_does_not_starve_another_producer(sentinel_stack)
