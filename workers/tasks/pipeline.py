"""The pipeline tasks. Their names and keyword arguments are the message contract
documented in docs/message-contract.md; nothing secret ever travels in a message."""

from __future__ import annotations

from typing import Any

from nanobanana_queue.workers.app import app
from nanobanana_queue.workers.contract import (
    TASK_ADOPT,
    TASK_DOWNLOAD,
    TASK_GENERATE,
    TASK_POLL,
    TASK_SUBMIT,
)
from nanobanana_queue.workers.runtime import get_runtime
from nanobanana_queue.workers.stages import adopt as adopt_stage
from nanobanana_queue.workers.stages import download as download_stage
from nanobanana_queue.workers.stages import poll as poll_stage
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.intake import intake
from nanobanana_queue.workers.tasks.base import STORE_UNREACHABLE, StageTask


@app.task(name=TASK_GENERATE, base=StageTask, bind=True)
def generate_task(
    self: StageTask,
    request: dict[str, Any],
    job_id: str | None = None,
    producer: str | None = None,
    batch_id: str | None = None,
    notify_url: str | None = None,
    on_done: dict[str, str] | None = None,
    priority: str | None = None,
    producer_proof: str | None = None,
) -> str:
    """Entry point for other services: record the job if new, then submit it."""
    rt = get_runtime()
    try:
        record = intake(
            rt,
            request=request,
            job_id=job_id,
            producer=producer,
            batch_id=batch_id,
            priority=priority,
            notify_url=notify_url,
            on_done=on_done,
            raw=True,
            producer_proof=producer_proof,
        )
    except STORE_UNREACHABLE as exc:  # keep the message: it may be all that is left of the job
        raise self._retry_store_outage(exc) from None
    if record is None or record.is_terminal:
        return "refused" if record is None else "terminal"
    if job_id is None:
        # Pin the new id: a retry re-sends this message and must find this record, not
        # mint a second job (and a second paid create).
        self.request.kwargs = {**(self.request.kwargs or {}), "job_id": record.job_id}
    return self.run_stage(submit_stage.submit, rt, job_id=record.job_id, record=record)


@app.task(name=TASK_SUBMIT, base=StageTask, bind=True)
def submit_task(self: StageTask, job_id: str) -> str:
    return self.run_stage(submit_stage.submit, get_runtime(), job_id=job_id)


@app.task(name=TASK_POLL, base=StageTask, bind=True, acks_late=True, reject_on_worker_lost=True)
def poll_task(
    self: StageTask,
    job_id: str,
    token: str = "",  # nosec B107 - poll token
    evolink_task_id: str | None = None,
) -> str:
    return self.run_stage(
        poll_stage.poll,
        get_runtime(),
        job_id=job_id,
        token=token,
        evolink_task_id=evolink_task_id,
    )


@app.task(name=TASK_DOWNLOAD, base=StageTask, bind=True, acks_late=True, reject_on_worker_lost=True)
def download_task(self: StageTask, job_id: str, evolink_task_id: str | None = None) -> str:
    return self.run_stage(
        download_stage.download,
        get_runtime(),
        job_id=job_id,
        evolink_task_id=evolink_task_id,
    )


@app.task(name=TASK_ADOPT, base=StageTask, bind=True, acks_late=True, reject_on_worker_lost=True)
def adopt_task(
    self: StageTask,
    job_id: str,
    task_id: str,
    source: str = "callback",
) -> str:
    """Re-fetch a task a callback or a person named and make it the job's (state-guarded)."""
    return self.run_stage(
        adopt_stage.adopt_message,
        get_runtime(),
        job_id=job_id,
        task_id=task_id,
        source=source,
    )
