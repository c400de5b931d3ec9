"""A create whose outcome is unknown is never sent again by default.

The emulator ignores ``Idempotency-Key`` (its default, as the vendor documents no
support), so every resend would make and charge a second task. Without callbacks the job
fails ``outcome_unknown`` saying what a person can do; with callbacks it waits in
``outcome_unknown`` for its task's verified callback, which is adopted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from nanobanana_queue.workers.callbacks import CallbackOutcome, callback_token, receive_callback
from nanobanana_queue.workers.errors import ApiUnavailableError, TransportError
from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.adopt import adopt
from nanobanana_queue.workers.stages.poll import poll
from nanobanana_queue.workers.stages.reconcile import reconcile_once
from nanobanana_queue.workers.stages.steps import Adopt, Message, Retry
from tests.support.emulator_server import EmulatorServer
from tests.support.records import seed
from tests.workers.stages.conftest import StepLog, age, claim_submit, new_job, wait_task_final

SECRET = "callback-secret-for-tests"
CALLBACKS: dict[str, Any] = {
    # Nothing listens there: the emulator's own deliveries fail; the test delivers by hand.
    "public_callback_url": "http://127.0.0.1:9",
    "callback_secret": SECRET,
}
#: Creates whose task is made and charged but whose answer never arrives intact.
UNKNOWN_FAULTS = ["drop_after_create", "malformed_json"]


def only_task(emulator: EmulatorServer) -> str:
    tasks = emulator._control("GET", "tasks")
    assert len(tasks) == 1, tasks
    return str(tasks[0]["id"])


def deliver(rt: Runtime, job_id: str, task_id: str) -> tuple[CallbackOutcome, list[Message]]:
    """One verified callback delivery; returns its outcome and the adoptions it sent."""
    sent: list[Message] = []
    outcome = receive_callback(
        rt.settings,
        rt.store,
        sent.append,
        job_id=job_id,
        token=callback_token(SECRET, job_id),
        body=json.dumps({"id": task_id, "status": "completed"}).encode(),
    )
    return outcome, sent


@pytest.mark.parametrize("fault", UNKNOWN_FAULTS)
def test_by_default_an_unknown_create_fails_the_job_and_is_never_resent(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer, fault: str
) -> None:
    emulator_server.add_fault(endpoint="create", action=fault, count=1)
    job_id = new_job(rt)

    assert steps(submit_stage.submit(rt, job_id)) == "failed_outcome_unknown"

    record = rt.store.require(job_id)
    assert record.state is JobState.FAILED and record.error is not None
    assert record.error.code == "outcome_unknown"
    for words in ("may have reached the API and been charged", "nbq adopt", "nbq retry"):
        assert words in record.error.message
    assert (record.attempts, record.paid_creates) == (1, 0)
    assert emulator_server.stats()["creates_accepted"] == 1
    assert steps.calls == []


@pytest.mark.parametrize("fault", UNKNOWN_FAULTS)
def test_with_callbacks_an_unknown_create_waits_and_its_callback_is_adopted(
    make_rt: Callable[..., Runtime],
    steps: StepLog,
    emulator_server: EmulatorServer,
    fault: str,
) -> None:
    rt = make_rt(**CALLBACKS)
    emulator_server.add_fault(endpoint="create", action=fault, count=1)
    job_id = new_job(rt)

    # When the create's answer is lost
    assert steps(submit_stage.submit(rt, job_id)) == "waiting_outcome_unknown"

    # Then the job waits visibly, saying why and until when
    record = rt.store.require(job_id)
    assert record.state is JobState.OUTCOME_UNKNOWN
    assert record.outcome_deadline_at is not None and record.waiting_reason
    assert "waiting for the task's callback until" in record.waiting_reason
    # When the task's verified callback arrives, its task is adopted (re-fetched)
    task_id = only_task(emulator_server)
    wait_task_final(emulator_server, task_id)
    outcome, sent = deliver(rt, job_id, task_id)
    assert outcome is CallbackOutcome.ADOPT_SENT and sent == [Adopt(job_id, task_id)]
    assert deliver(rt, job_id, task_id)[0] is CallbackOutcome.DUPLICATE
    assert steps(adopt(rt, job_id, task_id)) == "adopted"
    assert rt.store.require(job_id).state is JobState.GENERATING
    # Then its poll (the next message) sends the job on to download with the one paid task
    _, _, token = steps.last("poll")
    assert steps(poll(rt, job_id, token)) == "completed"
    record = rt.store.require(job_id)
    assert record.state is JobState.DOWNLOADING and record.evolink_task_id == task_id
    assert (record.attempts, record.paid_creates) == (1, 1)
    assert (record.credits_paid, record.credits_reserved) == (1.6, 0.0)
    assert steps.last("download") == ("download", job_id)
    assert emulator_server.stats()["creates_accepted"] == 1
    # And a second adoption finds the job moved on
    assert steps(adopt(rt, job_id, task_id)) == "not_adoptable_downloading"


def test_with_callbacks_no_callback_by_the_deadline_fails_the_job_outcome_unknown(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    rt = make_rt(**CALLBACKS, outcome_unknown_wait_s=0.1)
    emulator_server.add_fault(endpoint="create", action="drop_after_create", count=1)
    job_id = new_job(rt)
    assert steps(submit_stage.submit(rt, job_id)) == "waiting_outcome_unknown"
    age()

    report = reconcile_once(rt, steps)

    assert report.unknown_expired == [job_id]
    record = rt.store.require(job_id)
    assert record.state is JobState.FAILED and record.error is not None
    assert record.error.code == "outcome_unknown"
    assert "no callback for its task arrived within" in record.error.message
    assert "nbq adopt" in record.error.message
    assert emulator_server.stats()["creates_accepted"] == 1


@pytest.mark.usefixtures("short_submit_claims")
def test_a_callback_that_comes_while_the_job_is_submitting_is_adopted_when_the_outcome_is_unknown(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # Given a worker died between send and record: the job sits in submitting, marked
    rt = make_rt(**CALLBACKS)
    job_id = new_job(rt)
    claimed = claim_submit(rt, job_id)
    task = rt.api().create_task(GenerationRequest.model_validate(claimed.request))
    # When the task's callback arrives before anyone noticed: not ready, but noted
    assert deliver(rt, job_id, task.id)[0] is CallbackOutcome.NOT_READY
    assert rt.store.require(job_id).callback_task_id == task.id
    # And the reconciler recovers the job (outcome unknown), and submit runs
    age()
    assert reconcile_once(rt, steps).recovered_submitting == [job_id]
    assert rt.store.require(job_id).create_outcome_unknown is True
    assert steps(submit_stage.submit(rt, job_id)) == "adopting"
    # Then the noted task is adopted rather than waited for or paid again
    assert steps.last("adopt") == ("adopt", job_id, task.id, "callback")
    assert steps(adopt(rt, job_id, task.id)) == "adopted"
    assert rt.store.require(job_id).evolink_task_id == task.id
    assert emulator_server.stats()["creates_accepted"] == 1


@pytest.mark.usefixtures("short_submit_claims")
def test_a_worker_killed_between_send_and_record_never_leads_to_a_second_create_by_default(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    job_id = new_job(rt)
    claimed = claim_submit(rt, job_id)
    rt.api().create_task(GenerationRequest.model_validate(claimed.request))
    age()
    reconcile_once(rt, steps)

    assert steps(submit_stage.submit(rt, job_id)) == "failed_outcome_unknown"
    assert rt.store.require(job_id).error.code == "outcome_unknown"  # type: ignore[union-attr]
    assert emulator_server.stats()["creates_accepted"] == 1


@pytest.mark.usefixtures("short_submit_claims")
def test_a_mid_create_kill_during_a_quota_pause_fails_naming_the_lost_submit_not_the_breaker(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # Given a worker died between send and record, and the quota breaker then opened
    job_id = new_job(rt)
    claimed = claim_submit(rt, job_id)
    rt.api().create_task(GenerationRequest.model_validate(claimed.request))
    rt.breaker.trip(kind="quota", code="insufficient_quota", message="no credits left")
    age()
    assert reconcile_once(rt, steps).recovered_submitting == [job_id]
    # When submit runs with submissions still paused
    assert steps(submit_stage.submit(rt, job_id)) == "failed_outcome_unknown"
    # Then the failure names the real cause, the breaker's probe is not spent on it
    error = rt.store.require(job_id).error
    assert error is not None and error.code == "outcome_unknown"
    assert "recovered after a lost submit" in error.message
    assert "submissions paused" not in error.message
    assert rt.breaker.status().probes == 0
    assert emulator_server.stats()["creates_accepted"] == 1


def test_the_claim_is_in_the_record_before_the_request_leaves(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # The job is submitting (a create may be in flight) by the time the client is asked
    # to send: a worker killed now leaves it there, and the reconciler knows.
    seen: list[JobState] = []
    job_id = new_job(rt)
    original = rt.api

    def spying_api() -> Any:
        seen.append(rt.store.require(job_id).state)
        return original()

    rt.api = spying_api  # type: ignore[method-assign]
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    assert seen == [JobState.SUBMITTING]
    record = rt.store.require(job_id)
    assert record.state is JobState.GENERATING and (record.attempts, record.paid_creates) == (1, 1)


def test_at_least_once_creates_is_the_explicit_may_pay_twice_opt_in(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    rt = make_rt(at_least_once_creates=True)
    emulator_server.add_fault(endpoint="create", action="drop_after_create", count=1)
    job_id = new_job(rt)
    # The unknown create is retried (under the operator's opt-in), not held
    retry = submit_stage.submit(rt, job_id)
    assert isinstance(retry, Retry) and isinstance(retry.error, TransportError)
    assert isinstance(retry.exhausted, ApiUnavailableError)
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    record = rt.store.require(job_id)
    assert (record.attempts, record.paid_creates) == (2, 1)
    assert emulator_server.stats()["creates_accepted"] == 2  # paid twice, as opted into


def test_a_person_adopts_a_task_for_a_failed_unknown_outcome_job(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    emulator_server.add_fault(endpoint="create", action="drop_after_create", count=1)
    job_id = new_job(rt)
    assert steps(submit_stage.submit(rt, job_id)) == "failed_outcome_unknown"
    task_id = only_task(emulator_server)

    assert steps(adopt(rt, job_id, "task-unified-1-nosuchid", source="person")) == (
        "task_not_found"
    )
    assert steps(adopt(rt, job_id, task_id)) == "not_adoptable_failed"  # callbacks may not
    assert steps(adopt(rt, job_id, task_id, source="person")) == "adopted"

    record = rt.store.require(job_id)
    assert record.state in (JobState.GENERATING, JobState.DOWNLOADING)
    assert record.error is None and record.paid_creates == 1
    assert emulator_server.stats()["creates_accepted"] == 1


def test_a_callbacks_adoption_is_sent_inside_the_trace_of_the_jobs_enqueue(
    make_rt: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanobanana_queue.workers import tracing
    from nanobanana_queue.workers.jobs.record import JobRecord

    trace_id = "0af7651916cd43dd8448eb211c80319c"
    rt = make_rt(**CALLBACKS)
    job_id = "traced-unknown"
    seed(
        rt.store,
        JobRecord(
            job_id=job_id,
            state=JobState.OUTCOME_UNKNOWN,
            traceparent=f"00-{trace_id}-b7ad6b7169203331-01",
        ),
    )
    monkeypatch.setattr(tracing, "_on", True)  # the API alone: the context, no exporter
    sent_in: list[str | None] = []
    outcome = receive_callback(
        rt.settings,
        rt.store,
        lambda step: sent_in.append(tracing.current_traceparent()),
        job_id=job_id,
        token=callback_token(SECRET, job_id),
        body=json.dumps({"id": "task-1", "status": "completed"}).encode(),
    )
    assert outcome is CallbackOutcome.ADOPT_SENT
    assert [p and p.split("-")[1] for p in sent_in] == [trace_id]
