"""``/v1/jobs``: create (idempotent), read, images, cancel — each scoped to its producer."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from nanobanana_queue.producers.api import validate_request
from nanobanana_queue.producers.errors import (
    CreditBudgetExceededError,
    InvalidRequestError,
    JobIdConflictError,
    JobNotCancellableError,
    JobNotFoundError,
    JobNotStoredError,
)
from nanobanana_queue.producers.ingress.context import Context, IngressContext, ProducerName
from nanobanana_queue.producers.ingress.errors import ApiError, documented, not_found, quoted
from nanobanana_queue.producers.ingress.schemas import (
    ImagesView,
    ImageView,
    JobCreate,
    JobPage,
    JobView,
)
from nanobanana_queue.producers.listing import page_jobs
from nanobanana_queue.workers.jobs.ids import InvalidJobIdError, scoped_job_id, validate_job_id
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=128,
        description="Same as job_id in the body: the same key returns the same job.",
    ),
]


def view(record: JobRecord) -> JobView:
    """The job with its stored id (``<producer>~<id>``: one id everywhere, nbq status and
    S3 keys included); routes accept the id with or without the producer's prefix."""
    return JobView.model_validate(record.public_view())


def owned_record(context: IngressContext, producer: str, job_id: str) -> JobRecord:
    """The job if it exists in ``producer``'s id scope (its record, or after the record
    expired its S3 manifest); 404 otherwise (no leak)."""
    scoped = _scoped(producer, job_id)
    record = context.producer.lookup(scoped) if scoped else None
    if record is None or record.producer != producer:
        raise not_found(f"job {quoted(job_id)}")
    return record


def enqueue_one(
    context: IngressContext,
    producer: str,
    body: JobCreate,
    job_id: str | None,
    batch_id: str | None = None,
    notify_url: str | None = None,
) -> tuple[JobRecord, bool]:
    """``(record, created)``. Ids are scoped per producer (workers/jobs/ids.py): another
    producer's job of the same id is a different job, never returned nor revealed. The
    same request under a used id is the same job (200); another request is a 409
    ``job_id_conflict`` that says nothing about the job already there."""
    store = context.producer.runtime.store
    scoped = _scoped(producer, job_id) if job_id else None
    existing = store.get(scoped) if scoped else None
    try:
        if existing is not None and existing.producer == producer:
            if not existing.holds_request(validate_request(body.request_fields()).to_api_json()):
                raise JobIdConflictError(job_id or "")
            return existing, False
        handle = context.producer.enqueue(
            body.request_fields(),
            job_id=job_id,
            producer=producer,
            batch_id=batch_id,
            priority=body.priority,
            notify_url=body.notify_url or notify_url,
            on_done=body.on_done.model_dump() if body.on_done else None,
        )
    except CreditBudgetExceededError as exc:
        raise ApiError(429, "credit_budget_exceeded", _budget_message(exc)) from None
    except JobIdConflictError as exc:
        raise ApiError(409, "job_id_conflict", str(exc)) from None
    except InvalidRequestError as exc:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", *(exc.field or "request").split(".")),
                    "msg": str(exc),
                    "type": "value_error",
                }
            ]
        ) from None
    return handle.status(), True


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": JobView, "description": "the job already existed"},
        **documented(400, 401, 409, 413, 429),
    },
)
def create_job(
    body: JobCreate,
    response: Response,
    context: Context,
    producer: ProducerName,
    idempotency_key: IdempotencyKey = None,
) -> JobView:
    """Validate and enqueue one generation; 201 when new, 200 for a repeated id."""
    job_id = id_from(body.job_id, idempotency_key, field="job_id")
    record, created = enqueue_one(context, producer, body, job_id)
    response.headers["Location"] = f"/v1/jobs/{record.job_id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return view(record)


MAX_PAGE = 1000
_LIST_PARAMS = frozenset({"state", "batch_id", "limit", "cursor"})


@router.get("", responses=documented(400, 401))
def list_jobs(
    request: Request,
    context: Context,
    producer: ProducerName,
    state: JobState | None = None,
    batch_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=600)] = None,
) -> JobPage:
    """Your jobs, newest first (by creation); ``state``/``batch_id`` filter; pages follow
    ``next_cursor`` with no duplicate and no gap while jobs are being added. Never another
    producer's jobs."""
    unknown = sorted(set(request.query_params) - _LIST_PARAMS)
    if unknown:
        raise RequestValidationError(
            [{"loc": ("query", unknown[0]), "msg": "unknown parameter", "type": "value_error"}]
        )
    scoped_batch = _scoped(producer, batch_id) if batch_id is not None else None
    if batch_id is not None and scoped_batch is None:
        return JobPage(jobs=[], next_cursor=None)
    records, after = page_jobs(
        context.producer.runtime.store,
        producer,
        state=state,
        batch_id=scoped_batch,
        limit=limit,
        cursor=_decode_cursor(cursor) if cursor else None,
    )
    return JobPage(
        jobs=[view(r) for r in records], next_cursor=_encode_cursor(after) if after else None
    )


def _encode_cursor(position: tuple[float, str]) -> str:
    raw = json.dumps([position[0], position[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, job_id = json.loads(raw)
        if not isinstance(job_id, str) or not isinstance(score, int | float):
            raise ValueError
        return float(score), job_id
    except (ValueError, TypeError, binascii.Error):
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "cursor"),
                    "msg": "not a cursor from this API",
                    "type": "value_error",
                }
            ]
        ) from None


@router.get("/{job_id}", responses=documented(401, 404))
def get_job(job_id: str, context: Context, producer: ProducerName) -> JobView:
    """State, progress, errors and stored objects of one job."""
    return view(owned_record(context, producer, job_id))


@router.get("/{job_id}/images", responses=documented(401, 404, 409))
def get_images(job_id: str, context: Context, producer: ProducerName) -> ImagesView:
    """Presigned GET URLs of a stored job's images (409 until it is stored)."""
    record = owned_record(context, producer, job_id)
    expiry_s = context.settings.presign_expiry_s
    try:
        images = context.producer.results(record.job_id, expiry_s=expiry_s)
    except JobNotFoundError:
        raise not_found(f"job {quoted(job_id)}") from None
    except JobNotStoredError as exc:
        raise ApiError(409, "not_stored", str(exc)) from None
    return ImagesView(
        job_id=record.job_id,
        expires_in_s=expiry_s,
        images=[
            ImageView(
                key=i.key, url=i.url, sha256=i.sha256, size=i.size, content_type=i.content_type
            )
            for i in images
        ],
    )


@router.delete("/{job_id}", responses=documented(401, 404, 409))
def cancel_job(job_id: str, context: Context, producer: ProducerName) -> JobView:
    """Cancel a queued or in-flight job (idempotent); 409 if it already ended."""
    owned = owned_record(context, producer, job_id)
    try:
        record = context.producer.cancel(owned.job_id)
    except JobNotFoundError:
        raise not_found(f"job {quoted(job_id)}") from None
    except JobNotCancellableError as exc:
        raise ApiError(409, "not_cancellable", str(exc)) from None
    return view(record)


def _budget_message(exc: CreditBudgetExceededError) -> str:
    """The refusal as a producer may read it: its own budget's figures are its own; the
    shared budget's would tell it what the other producers spend, so they are left out."""
    if exc.budget == "NBQ_CREDIT_LIMIT_DAILY":
        return (
            "the shared daily credit budget (NBQ_CREDIT_LIMIT_DAILY) would be exceeded by "
            "this job; nothing was enqueued"
        )
    return str(exc)


def id_from(
    body_id: str | None, header_id: str | None, *, field: str, max_chars: int = 128
) -> str | None:
    """The id from the body or the ``Idempotency-Key`` header (422 if they differ)."""
    if header_id is None:
        return body_id
    problem = None
    try:
        validate_job_id(header_id)
    except InvalidJobIdError as exc:
        problem = str(exc).replace("job_id", "Idempotency-Key", 1)
    if problem is None and len(header_id) > max_chars:
        problem = f"Idempotency-Key is longer than {max_chars} characters"
    if problem is None and body_id is not None and body_id != header_id:
        problem = f"Idempotency-Key and {field} differ; send one or make them equal"
    if problem is not None:
        raise RequestValidationError(
            [{"loc": ("header", "Idempotency-Key"), "msg": problem, "type": "value_error"}]
        )
    return header_id


def _scoped(producer: str, job_id: str) -> str | None:
    """``job_id`` in ``producer``'s scope, or None when it is not a usable id."""
    try:
        return scoped_job_id(producer, job_id)
    except InvalidJobIdError:
        return None
