"""A dead worker is known within a lease, and exactly its work moves on then.

Every wait below is bounded by something the old rules could not meet: half the submit
time limit for a mid-create kill (the time-limit rule needs all of it), a third of
``NBQ_STUCK_AFTER_S`` for a lost poll (the idle rule needs all of it, and the broker's
visibility timeout is 600 s here). What recovers the jobs is the lease pass, which the
rescuer's log names (``reaped``). Nothing is paid twice: a mid-create kill's outcome is
unknown, so the job fails ``outcome_unknown`` (callbacks off), never created again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from typing import Any

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    assert_nothing_lost,
    creates_per_job,
    enqueue,
    kill_hard,
    wait_for_hits,
)
from tests.support.procs import child_pids, wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

LEASE_S = 2.0
SUBMIT_LIMIT_S = 60.0
STUCK_AFTER_S = 90.0


@pytest.fixture
def leased_stack(fast_stack: Stack) -> Stack:
    fast_stack.overrides.update(
        {
            "NBQ_WORKER_LEASE_S": str(LEASE_S),
            "NBQ_SUBMIT_TIME_LIMIT_S": str(SUBMIT_LIMIT_S),
            "NBQ_STUCK_AFTER_S": str(STUCK_AFTER_S),
            "NBQ_HTTP_CONNECT_TIMEOUT_S": "1",
        }
    )
    return fast_stack


@pytest.mark.parametrize("fault", ["sigkill", "sigstop"])
def test_a_submit_worker_lost_mid_create_has_its_outcome_decided_within_a_lease(
    leased_stack: Stack, fault: str
) -> None:
    stack = leased_stack
    # Given the only submit worker is caught inside a create that hangs
    victim, job_id = _caught_mid_create(stack)
    producer = stack.producer()
    # When it is SIGKILLed, or frozen (SIGSTOP) longer than its lease
    if fault == "sigkill":
        kill_hard(victim)
    else:
        os.killpg(victim.pid, signal.SIGSTOP)
    try:
        _decided_within_half_the_submit_limit(stack, job_id)
    finally:
        if fault == "sigstop":
            os.killpg(victim.pid, signal.SIGCONT)
    if fault == "sigstop":
        # And the frozen worker, resumed, ends its submit without creating again
        wait_until(
            lambda: "succeeded in" in _log(stack, "victim"),
            timeout_s=30,
            what="the resumed worker to end its submit",
        )
        assert producer.status(job_id).state is JobState.FAILED
    assert creates_per_job(stack, [job_id]).get(job_id, 0) <= 1


def test_a_prefork_child_killed_mid_create_has_its_outcome_decided_by_its_parent(
    leased_stack: Stack,
) -> None:
    stack = leased_stack
    # Given a prefork submit worker whose only pool process is inside a create that hangs
    victim, job_id = _caught_mid_create(stack, pool="prefork", concurrency=1)
    # When that child alone is SIGKILLed (the main process lives on, renewing its lease:
    # the lease pass never takes it for dead)
    [child] = child_pids(victim.pid)
    os.kill(child, signal.SIGKILL)
    # Then its parent decides the job's outcome (unknown: failed, never created again)
    # long before the submit time limit could, with no other worker's help
    _decided_within_half_the_submit_limit(stack, job_id, rescuer=False)
    assert "submit_process_lost" in _log(stack, "victim")
    assert creates_per_job(stack, [job_id]).get(job_id, 0) <= 1


def _caught_mid_create(stack: Stack, **worker: Any) -> tuple[subprocess.Popen[bytes], str]:
    """The only submit worker (``victim``), inside a job's create that hangs past it."""
    rule = stack.emulator.add_fault(
        endpoint="create", action="delay", seconds=3.0 * LEASE_S + 6, count=1, match="lease"
    )
    victim = stack.start_worker(name="victim", queues="submit", **worker)
    [job_id] = enqueue(stack.producer(), 1, prompt="lease")
    wait_for_hits(stack, rule)
    return victim, job_id


def _decided_within_half_the_submit_limit(
    stack: Stack, job_id: str, *, rescuer: bool = True
) -> None:
    producer = stack.producer()
    if rescuer:
        stack.start_worker(name="rescuer")
    # Then the job's outcome is decided well before the submit time limit could have
    wait_until(
        lambda: producer.status(job_id).state is JobState.FAILED,
        timeout_s=SUBMIT_LIMIT_S / 2,
        what="the lost create's outcome decided",
    )
    error = producer.status(job_id).error
    assert error is not None and error.code == "outcome_unknown"
    assert "recovered after a lost submit" in error.message
    if rescuer:
        rescuer_log = _log(stack, "rescuer")
        assert "reaped" in rescuer_log and "victim@test" in rescuer_log


@pytest.mark.parametrize(("endpoint", "queue"), [("query", "poll"), ("file", "download")])
def test_a_worker_killed_mid_poll_or_download_has_its_jobs_moving_within_a_lease(
    leased_stack: Stack, endpoint: str, queue: str
) -> None:
    stack = leased_stack
    # Given a poll (download) worker caught inside a query (file fetch), holding its
    # jobs' messages
    rule = stack.emulator.add_fault(
        endpoint=endpoint, action="delay", seconds=4.0, count=2, match="lease"
    )
    others = ",".join(q for q in ("submit", "poll", "download") if q != queue)
    stack.start_worker(name="submitter", queues=others)
    victim = stack.start_worker(name="victim", queues=queue)
    producer = stack.producer()
    job_ids = enqueue(producer, 2, prompt="lease")
    # (both calls in flight, so both deliveries are in kombu's unacked hash: a message
    # BRPOPped but not yet recorded there is lost with a SIGKILL — kombu's own window,
    # re-driven by the reconciler's idle rule, not by the lease pass)
    wait_for_hits(stack, rule, hits=2)
    # When it is SIGKILLed
    kill_hard(victim)
    stack.start_worker(name="rescuer", queues=queue)
    # Then the jobs finish long before the idle rules (NBQ_STUCK_AFTER_S, and for a
    # download 1.5 x NBQ_DOWNLOAD_TIMEOUT_S, less) could re-drive them: the lease pass
    # restarts the poll chains and puts back the broker's unacked deliveries
    records = stack.wait_all(producer, job_ids, timeout_s=STUCK_AFTER_S / 3)
    assert_nothing_lost(records)
    # (per job: a create the previous test's killed worker left hanging in the session's
    # emulator may still land in its global count)
    assert creates_per_job(stack, job_ids) == dict.fromkeys(job_ids, 1)
    logs = _log(stack, "submitter") + _log(stack, "rescuer")
    assert re.search(r"dead_workers=\['victim@test#\w+'\]", logs)


def _log(stack: Stack, name: str) -> str:
    return (stack.dir / f"worker-{name}.log").read_text(errors="replace")


def test_countdown_polls_held_across_a_redis_restart_come_back_within_a_lease(
    leased_stack: Stack,
) -> None:
    stack = leased_stack
    # Given a worker holding a job's countdown poll (the first poll a few seconds away)
    stack.overrides.update({"NBQ_POLL_MIN_INTERVAL_S": "4", "NBQ_DEFAULT_ESTIMATED_TIME_S": "4"})
    stack.start_worker(name="worker")
    producer = stack.producer()
    [job_id] = enqueue(producer, 1, prompt="lease")
    wait_until(
        lambda: producer.status(job_id).state is JobState.GENERATING,
        timeout_s=30,
        what="the job generating",
    )
    # When Redis restarts (from its AOF) under it
    stack.redis.restart()
    # Then the poll its lost channel held comes back long before the idle rule could
    # re-poll the job, and the job is stored
    records = stack.wait_all(producer, [job_id], timeout_s=STUCK_AFTER_S / 3)
    assert_nothing_lost(records)
    log = _log(stack, "worker")
    assert "restored_deliveries=1" in log
    assert stack.redis.client().hlen("unacked") == 0
    # And the reconnect logged no traceback (gossip is off: "Error on restarting Gossip")
    assert "Error on restarting" not in log and "Traceback" not in log
