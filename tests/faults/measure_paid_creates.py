"""Measurement, not a test (not collected: run it by name, it prints MEASURE lines).

Paid tasks per job against an emulator that ignores ``Idempotency-Key`` (its default),
with the old default (``NBQ_IDEMPOTENT_CREATES=true``) and the new one, for dropped
create answers (12 jobs, 4 dropped), a worker SIGKILLed while 8 creates hang (60 jobs),
and the dropped and SIGKILL cases with callbacks on::

    pytest tests/faults/measure_paid_creates.py -q -s -p no:cacheprovider | grep MEASURE
"""

from __future__ import annotations

import time

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import creates_per_job, enqueue, kill_hard
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.parametrize("idempotent", ["true", "false"])
def test_measure_dropped(fast_stack: Stack, idempotent: str) -> None:
    stack = fast_stack
    stack.overrides["NBQ_IDEMPOTENT_CREATES"] = idempotent
    stack.emulator.add_fault(endpoint="create", action="drop_after_create", count=4)
    stack.start_worker()
    p = stack.producer()
    ids = enqueue(p, 12, prompt="m")
    recs = stack.wait_all(p, ids)
    paid = creates_per_job(stack, ids)
    print(
        f"\nMEASURE dropped idempotent_creates={idempotent}: {sum(paid.values())} paid tasks for "
        f"{len(ids)} jobs; max per job {max(paid.values())}; states "
        f"{sorted((r.state.value, r.error.code if r.error else '') for r in recs.values())}"
    )


@pytest.mark.parametrize("idempotent", ["true", "false"])
def test_measure_sigkill(fast_stack: Stack, idempotent: str) -> None:
    stack = fast_stack
    stack.overrides["NBQ_IDEMPOTENT_CREATES"] = idempotent
    rule = stack.emulator.add_fault(endpoint="create", action="delay", seconds=3.0, count=8)
    victim = stack.start_worker(name="victim", concurrency=8)
    p = stack.producer()
    ids = enqueue(p, 60, prompt="k")
    wait_until(
        lambda: next(int(r["hits"]) for r in stack.emulator.faults() if r["id"] == rule["id"]) >= 8,
        timeout_s=30,
    )
    kill_hard(victim)
    stack.start_worker(name="rescuer")
    recs = stack.wait_all(p, ids)
    time.sleep(4)
    paid = creates_per_job(stack, ids)
    twice = sum(1 for n in paid.values() if n > 1)
    unknown = sum(1 for r in recs.values() if r.error and r.error.code == "outcome_unknown")
    print(
        f"\nMEASURE sigkill idempotent_creates={idempotent}: {sum(paid.values())} paid tasks for "
        f"{len(ids)} jobs; max per job {max(paid.values())}; jobs with 2+: {twice}; "
        f"failed outcome_unknown: {unknown}; "
        f"stored: {sum(1 for r in recs.values() if r.state is JobState.STORED)}"
    )


def test_measure_dropped_callbacks(fast_stack: Stack) -> None:
    from tests.producers.ingress.serving import enable_ingress, start_ingress

    stack = fast_stack
    ingress = start_ingress(stack, enable_ingress(stack))
    stack.emulator.add_fault(endpoint="create", action="drop_after_create", count=4)
    stack.start_worker()
    p = stack.producer()
    ids = enqueue(p, 12, prompt="m")
    recs = stack.wait_all(p, ids)
    ingress.stop()
    paid = creates_per_job(stack, ids)
    print(
        f"\nMEASURE dropped callbacks defaults: {sum(paid.values())} paid tasks for "
        f"{len(ids)} jobs; max per job {max(paid.values())}; stored "
        f"{sum(1 for r in recs.values() if r.state is JobState.STORED)}"
    )


def test_measure_sigkill_callbacks(fast_stack: Stack) -> None:
    from tests.producers.ingress.serving import enable_ingress, start_ingress

    stack = fast_stack
    stack.overrides["NBQ_OUTCOME_UNKNOWN_WAIT_S"] = "15"
    ingress = start_ingress(stack, enable_ingress(stack))
    rule = stack.emulator.add_fault(endpoint="create", action="delay", seconds=3.0, count=8)
    victim = stack.start_worker(name="victim", concurrency=8)
    p = stack.producer()
    ids = enqueue(p, 60, prompt="k")
    wait_until(
        lambda: next(int(r["hits"]) for r in stack.emulator.faults() if r["id"] == rule["id"]) >= 8,
        timeout_s=30,
    )
    kill_hard(victim)
    stack.start_worker(name="rescuer")
    recs = stack.wait_all(p, ids)
    ingress.stop()
    time.sleep(4)
    paid = creates_per_job(stack, ids)
    stored = sum(1 for r in recs.values() if r.state is JobState.STORED)
    unpaid_failed = sum(1 for j, r in recs.items() if r.state is JobState.FAILED and not paid[j])
    print(
        f"\nMEASURE sigkill callbacks defaults: {sum(paid.values())} paid tasks for {len(ids)} "
        f"jobs; max per job {max(paid.values())}; stored {stored}; failed with no task made "
        f"{unpaid_failed}"
    )
