"""A worker SIGKILLed while the fair-share gate defers jobs: none lost, none paid twice.

Deferred jobs are ``queued`` records with an ``nbq.submit`` countdown message; the dead
worker held some of those countdowns unacknowledged. The reconciler re-sends a queued job's
missing message, the new worker asks the gate again, and the create path's own guards (the
one-winner claim, the idempotency key) keep every job to one create.
"""

from __future__ import annotations

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import assert_nothing_lost, assert_one_create_each, kill_hard
from tests.support.procs import wait_until
from tests.support.stack import Stack


def test_a_worker_killed_while_jobs_are_deferred_loses_none_and_pays_none_twice(
    fast_stack: Stack,
) -> None:
    stack = fast_stack
    stack.overrides["NBQ_CREATES_PER_S"] = "2"
    producer = stack.producer()
    request = {"prompt": "fair crash", "quality": "1K"}
    job_ids = [producer.enqueue(request, producer="bulk").job_id for _ in range(8)]
    job_ids += [producer.enqueue(request, producer="shop").job_id for _ in range(3)]
    victim = stack.start_worker(name="victim")

    # When the worker is SIGKILLed while the gate is deferring jobs for their share
    def deferred() -> bool:
        return any(
            (r := producer.status(j)).state is JobState.QUEUED and r.waiting_reason == "fair_share"
            for j in job_ids
        )

    wait_until(deferred, timeout_s=60, interval_s=0.05, what="a job deferred by the gate")
    kill_hard(victim)
    # And a new worker takes over
    stack.start_worker(name="rescuer")
    records = stack.wait_all(producer, job_ids, timeout_s=180)
    # Then every job is stored with exactly one paid create
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
