"""A worker SIGKILLed mid-submit, mid-poll and mid-download: a new worker finishes the jobs.

Recovery comes from the reconciler (every NBQ_RECONCILE_INTERVAL_S=1 s in each worker,
jobs idle past NBQ_STUCK_AFTER_S=3 s), not from the broker's visibility timeout (600 s in
the stack): every wait below is bounded far under it.
"""

from __future__ import annotations

import pytest

from tests.faults.helpers import (
    SHORT_SUBMIT_LIMIT,
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
    kill_hard,
    wait_for_hits,
)
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

JOBS = 3


@pytest.mark.parametrize("endpoint", ["create", "query", "file"])
def test_a_worker_killed_mid_stage_leaves_nothing_lost_and_nothing_paid_twice(
    fast_stack: Stack, endpoint: str
) -> None:
    stack = fast_stack
    if endpoint == "create":
        # A create cut off mid-call is resent only under trusted idempotency (an opt-in;
        # the default, which never resends, is in tests/faults/test_unknown_outcomes.py).
        stack.overrides["NBQ_IDEMPOTENT_CREATES"] = "true"
        stack.emulator.set_idempotency(True)
        # The dead worker's claim is re-driven after the submit time limit: 12 s here
        stack.overrides.update(SHORT_SUBMIT_LIMIT)
    # Given every call to the endpoint hangs 4 s at first, so the worker is caught inside it
    rule = stack.emulator.add_fault(
        endpoint=endpoint, action="delay", seconds=4.0, count=JOBS, match="crash"
    )
    victim = stack.start_worker(name="victim")
    producer = stack.producer()
    job_ids = enqueue(producer, JOBS, prompt="crash")
    # When the worker is SIGKILLed while the first call hangs
    wait_for_hits(stack, rule)
    kill_hard(victim)
    # And a new worker starts
    stack.start_worker(name="rescuer")
    records = stack.wait_all(producer, job_ids)
    # Then every job is stored, with one paid create each and intact images
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)
    # And it was the reconciler that re-drove the stage the dead worker held
    rescuer_log = (stack.dir / "worker-rescuer.log").read_text(errors="replace")
    assert f"{RECOVERED[endpoint]}=" in rescuer_log and "reconciled" in rescuer_log


#: The reconciler's log field counting re-driven jobs, per stage that was interrupted.
RECOVERED = {"create": "recovered_submitting", "query": "repolled", "file": "redownloaded"}
