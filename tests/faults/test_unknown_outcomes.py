"""Unknown-outcome creates against a server that ignores ``Idempotency-Key``: never pay twice.

The emulator ignores the header (its default: the vendor documents no support), so a
resent create would make and charge a second task. Each scenario loses the answers to
some creates whose tasks were made and charged — dropped after the create, a garbled
2xx, a create slower than the client's read timeout, a worker SIGKILLed between send and
record — and runs with default settings, once without and once with callbacks:

* without callbacks, those jobs fail ``outcome_unknown`` with a message saying the create
  may have been charged and what a person can do; all others are stored;
* with callbacks (``nbq serve`` as the receiver), the unknown jobs wait in
  ``outcome_unknown`` and adopt their task from its verified callback: every job stored.

Paid tasks per job come from ``/_emulator/stats`` (tasks created per idempotency key,
``nbq-<job>-<round>``): at most one for every job, in every scenario.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    SHORT_SUBMIT_LIMIT,
    assert_images_intact,
    assert_nothing_lost,
    creates_per_job,
    enqueue,
    kill_hard,
    wait_for_hits,
)
from tests.producers.ingress.serving import IngressServer, enable_ingress, start_ingress
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

JOBS = 6
UNLUCKY = 2
#: scenario → (fault rule, extra settings). The rules match the unlucky jobs' prompts.
SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "dropped": ({"action": "drop_after_create"}, {}),
    "garbled_2xx": ({"action": "malformed_json"}, {}),
    "timeout": ({"action": "delay", "seconds": 2.5}, {"NBQ_HTTP_READ_TIMEOUT_S": "1"}),
    # The victim worker is SIGKILLed while these creates hang on the server (which then
    # makes and charges the task anyway); the reconciler re-drives its claims after the
    # submit time limit, 12 s here.
    "sigkill": ({"action": "delay", "seconds": 4.0}, SHORT_SUBMIT_LIMIT),
}


@pytest.fixture(params=[False, True], ids=["no_callbacks", "callbacks"])
def callbacks(request: pytest.FixtureRequest, fast_stack: Stack) -> bool:
    return bool(request.param)


def _run(stack: Stack, scenario: str, with_callbacks: bool) -> dict[str, JobRecord]:
    rule_fields, overrides = SCENARIOS[scenario]
    stack.overrides.update(overrides)
    stack.overrides["NBQ_OUTCOME_UNKNOWN_WAIT_S"] = "10"
    assert stack.emulator.stats()["honour_idempotency"] is False  # the default
    ingress: IngressServer | None = None
    if with_callbacks:
        ingress = start_ingress(stack, enable_ingress(stack))
    try:
        rule = stack.emulator.add_fault(
            endpoint="create", count=UNLUCKY, match="unlucky", **rule_fields
        )
        victim = stack.start_worker(name="victim" if scenario == "sigkill" else None)
        producer = stack.producer()
        job_ids = enqueue(producer, UNLUCKY, prompt="unlucky") + enqueue(
            producer, JOBS - UNLUCKY, prompt="lucky"
        )
        if scenario == "sigkill":
            wait_for_hits(stack, rule, hits=UNLUCKY)
            kill_hard(victim)
            stack.start_worker(name="rescuer")
        records = stack.wait_all(producer, job_ids)
    finally:
        if ingress is not None:
            ingress.stop()
    if rule_fields["action"] == "delay":
        # A delayed create lands on the server after its client gave up: count it too
        # (and keep it from landing in the next test's counters).
        time.sleep(float(rule_fields["seconds"]) + 1.0)
    paid = creates_per_job(stack, job_ids)
    print(f"{scenario} callbacks={with_callbacks}: paid tasks per job {sorted(paid.values())}")
    assert all(n <= 1 for n in paid.values()), paid  # never a second paid task
    for job_id, record in records.items():
        assert record.paid_creates <= paid[job_id] <= 1
    return records


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_an_unknown_create_outcome_never_pays_twice(
    fast_stack: Stack, callbacks: bool, scenario: str
) -> None:
    stack = fast_stack
    records = _run(stack, scenario, callbacks)

    unlucky = {j: r for j, r in records.items() if "unlucky" in r.request["prompt"]}
    lucky = {j: r for j, r in records.items() if j not in unlucky}
    if scenario == "sigkill":
        # A lucky job the victim held mid-create is just as unknown: it may fail so too.
        lucky = {j: r for j, r in lucky.items() if not _failed_unknown(r)}
        unlucky = {j: r for j, r in records.items() if j not in lucky}
    assert_nothing_lost(lucky)
    assert_images_intact(stack, records)
    if callbacks:
        # The paid task was recovered from its callback: every job with a task stored.
        paid = creates_per_job(stack, records)
        if scenario == "sigkill":
            # A create the kill cut off before it reached the server made no task and no
            # callback: that job fails outcome_unknown at the deadline, having paid nothing.
            unpaid = {j: r for j, r in unlucky.items() if paid[j] == 0}
            assert all(_failed_unknown(r) for r in unpaid.values()), unpaid
            unlucky = {j: r for j, r in unlucky.items() if j not in unpaid}
        assert_nothing_lost(unlucky)
        assert all(r.paid_creates == paid[j] == 1 for j, r in unlucky.items())
        return
    for record in unlucky.values():
        assert _failed_unknown(record), (record.state, record.error)
        assert record.error is not None
        assert "may have reached the API and been charged" in record.error.message
        assert "nbq adopt" in record.error.message and "nbq retry" in record.error.message


def _failed_unknown(record: JobRecord) -> bool:
    error = record.error
    return record.state is JobState.FAILED and error is not None and error.code == "outcome_unknown"


def test_trusting_idempotency_against_a_server_that_ignores_it_pays_twice(
    fast_stack: Stack,
) -> None:
    # The risk NBQ_IDEMPOTENT_CREATES=true takes (the old default), measured: 12 jobs, the
    # answers to 4 creates dropped after their task was made and charged.
    stack = fast_stack
    stack.overrides["NBQ_IDEMPOTENT_CREATES"] = "true"
    stack.emulator.add_fault(endpoint="create", action="drop_after_create", count=4)
    stack.start_worker()
    producer = stack.producer()
    job_ids = enqueue(producer, 12, prompt="trusting")
    records = stack.wait_all(producer, job_ids)

    assert_nothing_lost(records)  # every job stored ...
    paid = creates_per_job(stack, job_ids)
    assert sum(paid.values()) == 16  # ... but the 4 resent creates were each paid again
    assert sorted(paid.values()) == [1] * 8 + [2] * 4
