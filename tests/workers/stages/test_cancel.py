"""Cancel at every state: in-flight jobs end cancelled and no later stage moves them."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.errors import JobNotCancellableError, NbqError
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages import download as download_stage
from nanobanana_queue.workers.stages import poll as poll_stage
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.cancel import cancel_job
from nanobanana_queue.workers.stages.common import fail_job
from tests.workers.stages.conftest import StepLog, claim_submit, new_job, submitted_job


def _job_in(rt: Runtime, steps: StepLog, state: JobState) -> str:
    if state is JobState.QUEUED:
        return new_job(rt)
    if state is JobState.SUBMITTING:
        job_id = new_job(rt)
        claim_submit(rt, job_id)
        return job_id
    job_id = submitted_job(rt, steps).job_id
    if state is JobState.DOWNLOADING:
        token = rt.store.require(job_id).poll_token
        rt.store.apply(lifecycle.COMPLETED, job_id, expect={"poll_token": token}, result_urls=[])
    return job_id


@pytest.mark.parametrize(
    "state",
    [JobState.QUEUED, JobState.SUBMITTING, JobState.GENERATING, JobState.DOWNLOADING],
)
def test_cancelling_an_active_job_ends_it_and_every_later_stage_is_a_no_op(
    rt: Runtime, steps: StepLog, state: JobState
) -> None:
    job_id = _job_in(rt, steps, state)
    token = rt.store.require(job_id).poll_token or ""
    record = cancel_job(rt.store, job_id)
    assert record.state is JobState.CANCELLED and record.poll_token is None
    calls = len(steps.calls)
    assert steps(submit_stage.submit(rt, job_id)) == "terminal"
    assert steps(poll_stage.poll(rt, job_id, token)) == "gone"
    assert steps(download_stage.download(rt, job_id)) == "gone"
    assert len(steps.calls) == calls
    # Cancelling again is harmless
    assert cancel_job(rt.store, job_id).state is JobState.CANCELLED


def test_an_ended_job_cannot_be_cancelled(rt: Runtime, steps: StepLog) -> None:
    job_id = new_job(rt)
    fail_job(rt, job_id, NbqError("failed on purpose"))
    with pytest.raises(JobNotCancellableError, match="already failed"):
        cancel_job(rt.store, job_id)
    assert rt.store.require(job_id).state is JobState.FAILED


def test_a_queued_job_cancelled_or_failed_leaves_the_fair_share_lists(
    rt: Runtime, steps: StepLog
) -> None:
    """Neither is taken by a later create slot (nor charged to its producer's share): the
    next slot takes the job still waiting."""
    cancelled, failed, waiting = new_job(rt), new_job(rt), new_job(rt)
    cancel_job(rt.store, cancelled)
    fail_job(rt, failed, NbqError("failed on purpose"))
    assert [s.waiting for s in rt.fair().snapshot()] == [{"normal": 1}]
    took = rt.fair().take("slot", None, None, queued=False)
    assert (took.kind, took.job_id) == ("pick", waiting)
