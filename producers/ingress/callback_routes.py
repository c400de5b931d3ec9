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

from nanobanana_queue.producers.ingress.context import Context
from nanobanana_queue.producers.ingress.errors import documented
from nanobanana_queue.producers.ingress.schemas import CallbackAnswer
from nanobanana_queue.workers.callbacks import receive_callback

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
        403: {
            "model": CallbackAnswer,
            "description": "valid token, but of an earlier create round, or naming a task "
            "owned by another job: refused, nothing changed",
        },
        404: {"model": CallbackAnswer, "description": "wrong, expired or missing token"},
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
    outcome = await run_in_threadpool(
        receive_callback,
        context.settings,
        context.producer.runtime.store,
        context.producer.dispatcher.send,
        job_id=job_id,
        token=token,
        body=body,
    )
    return JSONResponse(
        CallbackAnswer(outcome=outcome.value).model_dump(), status_code=outcome.http_status
    )
