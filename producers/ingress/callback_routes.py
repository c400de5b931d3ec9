"""``POST /v1/callbacks/evolink/{job_id}?token=...``: Evolink's completion hint.

No bearer token: the per-job ``token`` in the URL is the authentication. The answer comes
at once (the work is one Redis round trip and, at most, one ``nbq.poll`` message); see
:mod:`workers.callbacks` for what each outcome means.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from producers.ingress.context import Context
from producers.ingress.errors import documented
from producers.ingress.schemas import CallbackAnswer
from workers.callbacks import receive_callback
from workers.contract import TASK_ADOPT, TASK_POLL

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])


@router.post(
    "/evolink/{job_id}",
    response_model=CallbackAnswer,
    responses={
        202: {
            "model": CallbackAnswer,
            "description": "an immediate poll re-fetches the task (or, for a job whose create "
            "outcome is unknown, the reported task is adopted)",
        },
        404: {"model": CallbackAnswer, "description": "wrong or missing token"},
        409: {"model": CallbackAnswer, "description": "job not ready yet; deliver again later"},
        **documented(400, 413),
    },
)
async def evolink_callback(
    job_id: str,
    request: Request,
    context: Context,
    token: Annotated[str | None, Query(max_length=256)] = None,
) -> JSONResponse:
    """A task may have ended: re-fetch it through a poll. The body is never trusted."""
    body = await request.body()
    celery = context.producer.celery

    def send_poll(poll_job_id: str, poll_token: str, task_id: str | None) -> None:
        kwargs = {"job_id": poll_job_id, "token": poll_token}
        if task_id:
            kwargs["evolink_task_id"] = task_id  # lets a job whose record vanished be rescued
        celery.send_task(TASK_POLL, kwargs=kwargs)

    def send_adopt(adopt_job_id: str, task_id: str) -> None:
        celery.send_task(
            TASK_ADOPT, kwargs={"job_id": adopt_job_id, "task_id": task_id, "source": "callback"}
        )

    outcome = await run_in_threadpool(
        receive_callback,
        context.settings,
        context.producer.runtime.store,
        send_poll,
        job_id=job_id,
        token=token,
        body=body,
        send_adopt=send_adopt,
    )
    return JSONResponse(
        CallbackAnswer(outcome=outcome.value).model_dump(), status_code=outcome.http_status
    )
