"""SIGTERM on a busy worker (a rolling update): nothing lost, and the process really exits.

The reconciler is pushed out of reach (``NBQ_STUCK_AFTER_S`` = 600 s, as is the broker's
visibility timeout), so every job finishing here was finished by the stopping worker or
given back to the broker by it: the warm shutdown alone is under test.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
    rule_hits,
    wait_for_hits,
)
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

#: ``worker_soft_shutdown_timeout`` in workers/app.py; docs/operations.md promises a
#: stopping worker is gone within it (Docker's stop_grace_period is 40 s).
SOFT_SHUTDOWN_TIMEOUT_S = 20.0
#: Room for Celery's own shutdown steps (closing pools, connections, the reconciler).
MARGIN_S = 10.0


@pytest.fixture
def no_reconciler(stack: Stack) -> Stack:
    stack.overrides["NBQ_STUCK_AFTER_S"] = "600"
    return stack


def sigterm(proc: subprocess.Popen[bytes]) -> float:
    """Send SIGTERM to the worker's main process; returns the moment it was sent."""
    proc.send_signal(signal.SIGTERM)
    return time.monotonic()


def wait_exit(proc: subprocess.Popen[bytes], sent_at: float) -> float:
    """Seconds from the signal to the exit; fails if past the promised bound."""
    try:
        proc.wait(timeout=SOFT_SHUTDOWN_TIMEOUT_S + MARGIN_S)
    except subprocess.TimeoutExpired:
        proc.kill()  # do not make the teardown wait out the hung task as well
        proc.wait(timeout=10)
        pytest.fail(
            f"worker still running {SOFT_SHUTDOWN_TIMEOUT_S + MARGIN_S:.0f} s after SIGTERM"
        )
    return time.monotonic() - sent_at


def test_sigterm_lets_running_downloads_finish_and_gives_waiting_messages_back(
    no_reconciler: Stack,
) -> None:
    stack = no_reconciler
    jobs = 6
    # Given every download takes 3 s, and a worker with 4 threads busy on some of them
    rule = stack.emulator.add_fault(endpoint="file", action="delay", seconds=3.0)
    victim = stack.start_worker(name="victim", concurrency=4)
    producer = stack.producer()
    job_ids = enqueue(producer, jobs, prompt="warm")
    wait_for_hits(stack, rule, hits=2)
    # When it receives SIGTERM with downloads started (each hit is one file GET begun)
    started = rule_hits(stack, str(rule["id"]))
    sent_at = sigterm(victim)
    took_s = wait_exit(victim, sent_at)
    print(f"victim exited {took_s:.1f} s after SIGTERM, code {victim.returncode}")
    # Then it exited cleanly after finishing the downloads it had started
    assert victim.returncode == 0
    after = {j: producer.status(j).state for j in job_ids}
    stored = sum(state is JobState.STORED for state in after.values())
    assert stored >= started, after
    assert stored < jobs, "nothing was left for the new worker: the test proves nothing"
    # And a new worker completes every other job from the messages given back
    stack.start_worker(name="rescuer")
    records = stack.wait_all(producer, job_ids, timeout_s=90)
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)
    assert "reconciled" not in (stack.dir / "worker-rescuer.log").read_text(errors="replace")


def test_sigterm_on_a_worker_inside_a_longer_download_still_exits_in_bounded_time(
    no_reconciler: Stack,
) -> None:
    stack = no_reconciler
    # Given a download that takes longer than the soft shutdown timeout
    stack.overrides["NBQ_DOWNLOAD_TIMEOUT_S"] = "120"
    hang_s = SOFT_SHUTDOWN_TIMEOUT_S + MARGIN_S + 15
    rule = stack.emulator.add_fault(
        endpoint="file", action="delay", seconds=hang_s, count=1, match="long"
    )
    victim = stack.start_worker(name="victim", concurrency=2)
    producer = stack.producer()
    job_ids = enqueue(producer, 1, prompt="long")
    wait_for_hits(stack, rule)
    # When it receives SIGTERM mid-download
    sent_at = sigterm(victim)
    took_s = wait_exit(victim, sent_at)
    print(f"victim exited {took_s:.1f} s after SIGTERM, code {victim.returncode}")
    # Then the download went back to the broker and a new worker stores the image
    stack.start_worker(name="rescuer")
    records = stack.wait_all(producer, job_ids, timeout_s=60)
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)
