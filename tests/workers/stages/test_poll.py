"""The poll stage: one live chain per job, deadlines, and what a failed task leads to."""

from __future__ import annotations

from collections.abc import Callable

from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages import poll as poll_stage
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.common import now
from tests.support.emulator_server import EmulatorServer
from tests.workers.stages.conftest import StepLog, set_fields, submitted_job, wait_task_final


def test_a_duplicated_poll_with_a_stale_token_is_a_no_op(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    record = submitted_job(rt, steps)
    _, job_id, token = steps.last("poll")
    # Given the first delivery of the poll ran
    assert steps(poll_stage.poll(rt, job_id, token)) in {"rescheduled", "completed"}
    queries = emulator_server.stats()["queries_total"]
    calls = len(steps.calls)
    before = rt.store.require(job_id)
    # When the same message is delivered again
    outcome = steps(poll_stage.poll(rt, job_id, token))
    # Then it stops at once: no query, nothing scheduled, the record unchanged
    assert outcome in {"stale_token", "stale_downloading"}
    assert emulator_server.stats()["queries_total"] == queries
    assert len(steps.calls) == calls
    after = rt.store.require(job_id)
    assert (after.poll_token, after.polls, after.state) == (
        before.poll_token,
        before.polls,
        before.state,
    )
    assert record.evolink_task_id == after.evolink_task_id


def test_a_poll_past_the_deadline_fails_deadline_exceeded_and_keeps_the_task_id(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    record = submitted_job(rt, steps)
    _, job_id, token = steps.last("poll")
    set_fields(rt, job_id, deadline_at=now() - 1)
    queries = emulator_server.stats()["queries_total"]
    assert steps(poll_stage.poll(rt, job_id, token)) == "deadline_exceeded"
    failed = rt.store.require(job_id)
    assert failed.state is JobState.FAILED
    assert failed.error is not None and failed.error.code == "deadline_exceeded"
    assert failed.error.retryable is True
    assert failed.evolink_task_id == record.evolink_task_id
    assert record.evolink_task_id is not None
    assert record.evolink_task_id in failed.error.message
    assert emulator_server.stats()["queries_total"] == queries  # no query after the deadline


def _poll_until_task_failed(
    rt: Runtime, steps: StepLog, emulator: EmulatorServer, job_id: str
) -> str:
    record = rt.store.require(job_id)
    assert record.evolink_task_id
    wait_task_final(emulator, record.evolink_task_id)
    _, _, token = steps.last("poll")
    return steps(poll_stage.poll(rt, job_id, token))


def test_a_retryable_task_error_recreates_with_a_new_key_up_to_max_create_attempts(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    rt = make_rt(max_create_attempts=3)
    emulator_server.add_fault(
        endpoint="create", action="fail_task", code="generation_timeout", match="timeout"
    )
    first = submitted_job(rt, steps, prompt="always timeout")
    job_id = first.job_id
    task_ids = [first.evolink_task_id]
    for round_no in (2, 3):
        # When its task fails with a retryable code
        assert _poll_until_task_failed(rt, steps, emulator_server, job_id) == "recreate"
        # Then the job is queued again for a fresh task, under a new idempotency key
        queued = rt.store.require(job_id)
        assert queued.state is JobState.QUEUED and queued.create_seq == round_no
        assert queued.previous_task_ids == task_ids
        assert steps.last("submit") == ("submit", job_id)
        assert steps(submit_stage.submit(rt, job_id)) == "created"
        task_ids.append(rt.store.require(job_id).evolink_task_id)
    keys = emulator_server.stats()["creates_by_idempotency_key"]
    assert keys == {f"nbq-{job_id}-1": 1, f"nbq-{job_id}-2": 1, f"nbq-{job_id}-3": 1}
    # And after max_create_attempts the job fails, still marked retryable
    assert _poll_until_task_failed(rt, steps, emulator_server, job_id) == "failed"
    failed = rt.store.require(job_id)
    assert failed.state is JobState.FAILED
    assert failed.error is not None and failed.error.code == "generation_timeout"
    assert failed.error.retryable is True
    assert len(set(task_ids)) == 3


def test_a_permanent_task_error_fails_the_job_with_its_code_and_no_recreate(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    emulator_server.add_fault(
        endpoint="create", action="fail_task", code="content_policy_violation", match="forbidden"
    )
    record = submitted_job(rt, steps, prompt="forbidden scene")
    assert _poll_until_task_failed(rt, steps, emulator_server, record.job_id) == "failed"
    failed = rt.store.require(record.job_id)
    assert failed.state is JobState.FAILED and failed.create_seq == 1
    assert failed.error is not None and failed.error.code == "content_policy_violation"
    assert failed.error.retryable is False
    assert not [c for c in steps.calls if c[0] == "submit"]
    assert emulator_server.stats()["creates_accepted"] == 1
