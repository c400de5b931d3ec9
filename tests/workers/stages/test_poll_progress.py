"""Opt-in ``job.progress`` webhooks: one signed event per new progress step, best effort.

The poll stage tells the store's progress listeners after the one write that changed a
job's progress (or moved it to downloading); NBQ_NOTIFY_PROGRESS opts producers in.
"""

from __future__ import annotations

from collections.abc import Callable

from nanobanana_queue.workers.evolink.models import Task, TaskStatus
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.notify.events import progress_webhook_id
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.poll import handle_task_state
from nanobanana_queue.workers.stages.steps import Notify
from tests.support.records import seed
from tests.workers.stages.conftest import StepLog

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
URL = "https://shop.example/hooks"


def _generating(rt: Runtime, job_id: str, producer: str = "shop") -> None:
    seed(
        rt.store,
        JobRecord(
            job_id=job_id,
            producer=producer,
            notify_url=URL,
            state=JobState.GENERATING,
            evolink_task_id=f"task-{job_id}",
            poll_token="t0",
        ),
    )


def _report(rt: Runtime, steps: StepLog, job_id: str, progress: int, *, done: bool = False) -> str:
    """One poll's news for the job (the live chain's token), as the poll stage acts on it."""
    task = Task(
        id=f"task-{job_id}",
        status=TaskStatus.COMPLETED if done else TaskStatus.PROCESSING,
        progress=progress,
        results=["https://files.example/a.png"] if done else None,
    )
    return steps(handle_task_state(rt, rt.store.require(job_id), task, "t0"))


def _progress(steps: StepLog) -> list[Notify]:
    return [s for s in steps.steps if isinstance(s, Notify) and s.event == "job.progress"]


def test_an_opted_in_job_sends_one_signed_progress_event_per_new_step(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    # Given the producer opted in to job.progress
    rt = make_rt(notify_secrets=f"shop:{SECRET}", notify_progress=["shop"])
    rt.install_notify(steps, lambda *a, **kw: None)
    _generating(rt, "p-1")
    # When polls report 40, 40 again, 70, then the task completes
    for progress in (40, 40, 70):
        assert _report(rt, steps, "p-1", progress) == "rescheduled"
    assert _report(rt, steps, "p-1", 100, done=True) == "completed"
    # Then one job.progress per distinct step, each with its own stable id
    sent = _progress(steps)
    assert [(s.payload["data"]["state"], s.payload["data"]["progress"]) for s in sent] == [
        ("generating", 40),
        ("generating", 70),
        ("downloading", 100),
    ]
    assert [s.webhook_id for s in sent] == [
        progress_webhook_id("p-1", "generating", 40),
        progress_webhook_id("p-1", "generating", 70),
        progress_webhook_id("p-1", "downloading", 100),
    ]
    assert all(s.url == URL and s.payload["type"] == "job.progress" for s in sent)
    assert "notify_url" not in sent[0].payload["data"]


def test_a_job_of_a_producer_not_opted_in_sends_no_progress_event(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    rt = make_rt(notify_secrets=f"shop:{SECRET},other:{SECRET}", notify_progress=["shop"])
    rt.install_notify(steps, lambda *a, **kw: None)
    _generating(rt, "p-2", producer="other")
    assert _report(rt, steps, "p-2", 40) == "rescheduled"
    assert _report(rt, steps, "p-2", 100, done=True) == "completed"
    assert _progress(steps) == []


def test_a_failed_progress_send_never_blocks_the_stage_nor_enters_the_outbox(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    # Given an opted-in job whose progress sends all raise (the broker away)
    rt = make_rt(notify_secrets=f"shop:{SECRET}", notify_progress=["*"])

    def broken(step: Notify) -> None:
        raise ConnectionError("broker away")

    rt.install_notify(broken, lambda *a, **kw: None)
    _generating(rt, "p-3")
    # Then the poll stage still records the progress and moves on
    assert _report(rt, steps, "p-3", 55) == "rescheduled"
    assert rt.store.require("p-3").progress == 55
    assert _report(rt, steps, "p-3", 100, done=True) == "completed"
    assert rt.store.require("p-3").state is JobState.DOWNLOADING
    assert rt.store.outbox_due(before=float("inf")) == []
