"""The submit stage: the breaker keeps jobs queued; a duplicate never creates again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from nanobanana_queue.workers.errors import BREAKER_WAIT, QuotaExceededError
from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.steps import Poll, Retry, Submit
from tests.support.clock import SteppedClock
from tests.support.emulator_server import EmulatorServer
from tests.workers.stages.conftest import StepLog, claim_submit, new_job, submitted_job


def test_submit_with_the_quota_breaker_open_waits_queued_with_a_quota_named_cause(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    rt.breaker.trip(kind="quota", code="insufficient_quota", message="no credits left")
    job_id = new_job(rt)
    step = submit_stage.submit(rt, job_id)
    assert isinstance(step, Retry) and isinstance(step.error, submit_stage.QuotaBreakerOpenError)
    assert step.error.retry_rule is BREAKER_WAIT
    assert "quota" in str(step.error) and "insufficient_quota" in str(step.error)
    assert step.budget is None and step.after_s >= 1.0  # waits, never fails
    assert not step.spends_budget
    record = rt.store.require(job_id)
    assert record.state is JobState.QUEUED and record.attempts == 0
    assert record.waiting_reason == "submissions paused: quota"
    assert emulator_server.stats()["creates_accepted"] == 0
    assert steps.calls == []


def test_a_create_block_another_worker_set_defers_the_submit_and_sends_nothing(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # Given another worker's create got a 429 (its limiter, the same Redis)
    from nanobanana_queue.workers.resilience.limiter import SharedRateLimiter

    SharedRateLimiter(rt.redis, prefix=rt.settings.key_prefix).penalise("create", 30.0)
    job_id = new_job(rt)
    # When this worker's submit runs, the breaker closed and no rate set
    step = submit_stage.submit(rt, job_id)
    # Then the job waits queued, nothing was sent, and the submit comes back later
    assert isinstance(step, Submit) and step.label == "deferred_rate_limit"
    assert step.job_id == job_id and step.after_s > 20
    record = rt.store.require(job_id)
    assert record.state is JobState.QUEUED and record.waiting_reason == "rate_limit"
    assert emulator_server.stats()["creates_accepted"] == 0


def test_a_duplicated_submit_of_a_generating_job_polls_with_its_token_and_never_creates(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    record = submitted_job(rt, steps)
    assert submit_stage.submit(rt, record.job_id) == Poll(
        record.job_id,
        record.poll_token or "",
        evolink_task_id=record.evolink_task_id,
        label="already_submitted",
    )
    assert emulator_server.stats()["creates_accepted"] == 1
    assert rt.store.require(record.job_id).attempts == 1


def test_a_submit_that_finds_the_job_submitting_leaves_it_alone(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    job_id = new_job(rt)
    claim_submit(rt, job_id)
    assert steps(submit_stage.submit(rt, job_id)) == "busy_submitting"
    assert emulator_server.stats()["creates_accepted"] == 0 and steps.calls == []


def test_a_stale_record_handed_in_by_intake_still_creates_only_once(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # nbq.generate passes the record its intake read, to save a read; by the time submit
    # runs another worker may have taken the job. The atomic claim still decides.
    job_id = new_job(rt)
    as_read = rt.store.require(job_id)
    assert steps(submit_stage.submit(rt, job_id, record=as_read)) == "created"
    assert steps(submit_stage.submit(rt, job_id, record=as_read)) == "lost_race"
    assert emulator_server.stats()["creates_accepted"] == 1
    assert rt.store.require(job_id).attempts == 1


def test_a_request_is_validated_once_at_intake_and_sent_to_the_api_as_stored(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    validated: list[object] = []
    original = GenerationRequest.model_validate

    def counting(obj: object, *args: Any, **kwargs: Any) -> GenerationRequest:
        validated.append(obj)
        return original(obj, *args, **kwargs)

    monkeypatch.setattr(GenerationRequest, "model_validate", counting)
    # Given a raw request entering at intake (another service's nbq.generate)
    job_id = new_job(rt)
    # When its job is submitted
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    # Then it was validated once; the record holds its API JSON, which the create sent
    assert validated == [{"prompt": "stage test", "quality": "1K"}]
    assert rt.store.require(job_id).request == original(validated[0]).to_api_json()
    assert emulator_server.stats()["creates_accepted"] == 1


def test_the_402_that_trips_the_breaker_leaves_the_breakers_wording_on_the_job(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # Given no credits left: the create answers 402 insufficient_quota
    emulator_server.set_credits(0)
    job_id = new_job(rt)
    step = submit_stage.submit(rt, job_id)
    assert isinstance(step, Retry) and isinstance(step.error, QuotaExceededError)
    # Then the job says what the README says (not the API's error code)
    assert rt.store.require(job_id).waiting_reason == "submissions paused: quota"


def test_a_granted_create_that_finds_every_waiting_producer_capped_gives_its_token_back(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    """The slot comes back later; the create rate it was granted goes to the next slot
    instead of being lost."""
    rt = make_rt(creates_per_s=1, max_in_flight_per_producer=1)
    clock = SteppedClock()
    rt.limiter.clock = clock
    first, second = new_job(rt), new_job(rt)
    assert steps(submit_stage.submit(rt, first)) == "created"  # the producer's 1 in flight
    clock.advance(1.0)  # one token refilled
    assert steps(submit_stage.submit(rt, second)) == "deferred_producer_in_flight"
    assert rt.limiter.acquire("create") == 0  # the token is still there
