"""The submit stage: the breaker keeps jobs queued; a duplicate never creates again."""

from __future__ import annotations

import pytest

from tests.support.emulator_server import EmulatorServer
from tests.workers.stages.conftest import RecordingScheduler, claim_submit, new_job, submitted_job
from workers.jobs.state import JobState
from workers.runtime import Runtime
from workers.stages import submit as submit_stage
from workers.stages.common import RetryLater


def test_submit_with_the_quota_breaker_open_waits_queued_with_a_quota_named_cause(
    rt: Runtime, sched: RecordingScheduler, emulator_server: EmulatorServer
) -> None:
    rt.breaker.trip(kind="quota", code="insufficient_quota", message="no credits left")
    job_id = new_job(rt)
    with pytest.raises(RetryLater) as caught:
        submit_stage.submit(rt, sched, job_id)
    signal = caught.value
    assert isinstance(signal.cause, submit_stage.QuotaBreakerOpenError)
    assert "quota" in str(signal.cause) and "insufficient_quota" in str(signal.cause)
    assert signal.max_retries is None and signal.countdown_s >= 1.0  # waits, never fails
    record = rt.store.require(job_id)
    assert record.state is JobState.QUEUED and record.attempts == 0
    assert record.waiting_reason == "submissions paused: quota"
    assert emulator_server.stats()["creates_accepted"] == 0
    assert sched.calls == []


def test_a_duplicated_submit_of_a_generating_job_polls_with_its_token_and_never_creates(
    rt: Runtime, sched: RecordingScheduler, emulator_server: EmulatorServer
) -> None:
    record = submitted_job(rt, sched)
    assert submit_stage.submit(rt, sched, record.job_id) == "already_submitted"
    assert sched.last("poll") == ("poll", record.job_id, record.poll_token)
    assert emulator_server.stats()["creates_accepted"] == 1
    assert rt.store.require(record.job_id).attempts == 1


def test_a_submit_that_finds_the_job_submitting_leaves_it_alone(
    rt: Runtime, sched: RecordingScheduler, emulator_server: EmulatorServer
) -> None:
    job_id = new_job(rt)
    claim_submit(rt, job_id)
    assert submit_stage.submit(rt, sched, job_id) == "busy_submitting"
    assert emulator_server.stats()["creates_accepted"] == 0 and sched.calls == []


def test_a_stale_record_handed_in_by_intake_still_creates_only_once(
    rt: Runtime, sched: RecordingScheduler, emulator_server: EmulatorServer
) -> None:
    # nbq.generate passes the record its intake read, to save a read; by the time submit
    # runs another worker may have taken the job. The atomic claim still decides.
    job_id = new_job(rt)
    as_read = rt.store.require(job_id)
    assert submit_stage.submit(rt, sched, job_id, record=as_read) == "created"
    assert submit_stage.submit(rt, sched, job_id, record=as_read) == "lost_race"
    assert emulator_server.stats()["creates_accepted"] == 1
    assert rt.store.require(job_id).attempts == 1
