"""Redis (broker and job store, AOF on) restarted while jobs are in submit, poll and download.

Job records and queued messages survive in the AOF; what a restart breaks is in-flight
work: a create whose answer cannot be recorded, a poll whose countdown message lived in a
worker's memory, a download whose final transition fails. The reconciler re-drives
whatever stalled, through the same state-checked transitions, so no job is lost and none
is paid twice.

Found here: the Celery 5.7 / kombu 5.7 consumer dies on the connection loss ("Unrecoverable
error: AttributeError 'NoneType' object has no attribute 'hostname'" while restoring
unacked messages) and the worker process exits. With a supervisor that restarts it (as
compose/systemd do) every job completes; without one, nothing is consumed any more.
"""

from __future__ import annotations

import subprocess

import pytest

from nanobanana_queue.producers.api import Producer
from tests.faults.helpers import (
    END_TIMEOUT_S,
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
    wait_for_hits,
)
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

#: Per stage: jobs held inside its API call when Redis goes away.
JOBS_PER_STAGE = 2
#: Real seconds each held call hangs: longer than the restart takes.
HOLD_S = 4.0


def _jobs_in_every_stage_then_restart(
    stack: Stack,
) -> tuple[subprocess.Popen[bytes], Producer, list[str]]:
    """Jobs caught inside a create, a query and a file download; then Redis restarts.

    A create answered while Redis is away cannot be recorded: its job is found in
    ``submitting`` (claimed before the create left), an unknown outcome. Resending it is safe only
    under trusted idempotency against a server honouring it, which this scenario asks for
    (the default fails such a job ``outcome_unknown``: tests/faults/test_unknown_outcomes.py).
    """
    stack.overrides["NBQ_IDEMPOTENT_CREATES"] = "true"
    stack.emulator.set_idempotency(True)
    rules = [
        stack.emulator.add_fault(
            endpoint=endpoint, action="delay", seconds=HOLD_S, count=JOBS_PER_STAGE, match=marker
        )
        for endpoint, marker in (("create", "in-create"), ("query", "in-poll"), ("file", "in-dl"))
    ]
    worker = stack.start_worker(concurrency=8)
    producer = stack.producer()
    job_ids = [
        job_id
        for marker in ("in-create", "in-poll", "in-dl")
        for job_id in enqueue(producer, JOBS_PER_STAGE, prompt=f"redis {marker}")
    ]
    for rule in rules:
        wait_for_hits(stack, rule)
    stack.redis.restart()  # a clean stop: the AOF is flushed
    return worker, producer, job_ids


def _all_ended(producer: Producer, job_ids: list[str]) -> bool:
    return all(producer.status(j).is_terminal for j in job_ids)


def test_a_redis_restart_with_jobs_in_every_stage_is_survived_by_the_running_worker(
    fast_stack: Stack,
) -> None:
    worker, producer, job_ids = _jobs_in_every_stage_then_restart(fast_stack)
    # Then the same worker reconnects and finishes every job (or dies: stop waiting then)
    wait_until(
        lambda: worker.poll() is not None or _all_ended(producer, job_ids),
        timeout_s=END_TIMEOUT_S,
        what="jobs to end or the worker to exit",
    )
    assert worker.poll() is None, f"worker exited with {worker.returncode} after the restart"
    records = fast_stack.wait_all(producer, job_ids)
    assert_nothing_lost(records)
    assert_one_create_each(fast_stack, job_ids)


def test_a_redis_restart_with_jobs_in_every_stage_loses_none_and_pays_once_under_supervision(
    fast_stack: Stack,
) -> None:
    stack = fast_stack
    worker, producer, job_ids = _jobs_in_every_stage_then_restart(stack)
    # When the supervisor restarts the worker if it died (compose: restart: unless-stopped)
    wait_until(
        lambda: worker.poll() is not None or _all_ended(producer, job_ids),
        timeout_s=END_TIMEOUT_S,
        what="jobs to end or the worker to exit",
    )
    if worker.poll() is not None:
        stack.start_worker(name="restarted")
    records = stack.wait_all(producer, job_ids)
    # Then every job is stored, nothing paid twice, images intact
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)
