"""``nbq adopt`` of a task the API does not know: the worker's verdict is on the record at
once, so the person learns it in milliseconds, not after a 30 s wait (issue 31, item 8)."""

from __future__ import annotations

from nanobanana_queue.workers.jobs.record import JobError, JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.adopt import adopt


def _failed(rt: Runtime, job_id: str) -> None:
    rt.store.create(JobRecord(job_id=job_id, state=JobState.FAILED,
                              error=JobError(code="outcome_unknown", message="m")))  # fmt: skip


def test_a_persons_adopt_of_an_unknown_task_leaves_the_verdict_on_the_record(
    rt: Runtime,
) -> None:
    _failed(rt, "j1")
    assert adopt(rt, "j1", "task-unified-1-nosuchid", source="person").label == "task_not_found"
    record = rt.store.require("j1")
    assert record.state is JobState.FAILED
    assert record.waiting_reason == (
        "adopt of task task-unified-1-nosuchid refused: the API does not know this task"
    )


def test_a_callbacks_unknown_task_leaves_no_note_for_a_person(rt: Runtime) -> None:
    _failed(rt, "j2")
    adopt(rt, "j2", "task-unified-1-nosuchid", source="callback")
    assert rt.store.require("j2").waiting_reason is None
