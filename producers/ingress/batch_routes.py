"""``/v1/batches``: many requests under one id; counts by state on read."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from nanobanana_queue.producers.ingress.batches import done_count
from nanobanana_queue.producers.ingress.context import Context, ProducerName
from nanobanana_queue.producers.ingress.errors import (
    ApiError,
    describe_problems,
    documented,
    not_found,
    quoted,
)
from nanobanana_queue.producers.ingress.jobs_routes import IdempotencyKey, enqueue_one, id_from
from nanobanana_queue.producers.ingress.schemas import (
    MAX_BATCH_ID_CHARS,
    BatchCreate,
    BatchCreated,
    BatchView,
    JobCreate,
    RefusedJob,
)
from nanobanana_queue.workers.jobs.ids import InvalidJobIdError, new_job_id, scoped_job_id

router = APIRouter(prefix="/v1/batches", tags=["batches"])


@router.post("", status_code=status.HTTP_201_CREATED, responses=documented(400, 401, 409, 413))
def create_batch(
    body: BatchCreate,
    response: Response,
    context: Context,
    producer: ProducerName,
    idempotency_key: IdempotencyKey = None,
) -> BatchCreated:
    """Enqueue every valid request; list the others in ``refused`` (index, code, field).

    Partial acceptance, as ``nbq batch`` does with bad lines: one typo does not hold up
    999 good jobs, and because job ids are ``<batch_id>-<index>`` (or the item's own),
    resending the corrected batch enqueues only what was refused. A batch of which no
    request is valid answers 422.
    """
    batch_id = (
        id_from(body.batch_id, idempotency_key, field="batch_id", max_chars=MAX_BATCH_ID_CHARS)
        or new_job_id()
    )
    # Batch ids are scoped per producer like job ids: another's batch is another batch.
    scoped_batch = scoped_job_id(producer, batch_id)
    if not context.batches.claim(scoped_batch, producer):
        raise ApiError(409, "batch_id_in_use", f"batch_id {quoted(batch_id)} is already in use")
    accepted: list[str] = []
    refused: list[RefusedJob] = []
    for index, raw in enumerate(body.requests):
        job_id = f"{batch_id}-{index}"
        try:
            item = JobCreate.model_validate(raw)
        except ValidationError as exc:
            field, message = describe_problems(exc.errors(), prefix=("requests", index))
            own = raw.get("job_id") if isinstance(raw, dict) else None
            refused.append(
                RefusedJob(
                    index=index,
                    job_id=own if isinstance(own, str) and len(own) <= 128 else job_id,
                    code="invalid_request",
                    message=message,
                    field=field,
                )
            )
            continue
        job_id = item.job_id or job_id
        try:
            record, _ = enqueue_one(
                context,
                producer,
                item,
                job_id,
                batch_id=scoped_batch,
                notify_url=body.notify_url,
            )
        except RequestValidationError as exc:  # a rule only the producer checks
            field, message = describe_problems(exc.errors(), prefix=("requests", index))
            refused.append(
                RefusedJob(
                    index=index, job_id=job_id, code="invalid_request", message=message,
                    field=field,
                )
            )  # fmt: skip
            continue
        except ApiError as exc:
            refused.append(
                RefusedJob(index=index, job_id=job_id, code=exc.code, message=exc.message)
            )
            continue
        accepted.append(record.job_id)
        context.batches.add(scoped_batch, [record.job_id])
    if not accepted and refused and all(r.code == "invalid_request" for r in refused):
        first = refused[0]
        raise ApiError(
            422,
            "invalid_request",
            f"no request of the batch is valid: {first.message}",
            field=first.field,
        )
    response.headers["Location"] = f"/v1/batches/{scoped_batch}"
    return BatchCreated(batch_id=scoped_batch, job_ids=accepted, refused=refused)


@router.get("/{batch_id}", responses=documented(401, 404))
def get_batch(batch_id: str, context: Context, producer: ProducerName) -> BatchView:
    """How many of the batch's jobs are in each state."""
    try:
        scoped_batch = scoped_job_id(producer, batch_id)
    except InvalidJobIdError:
        raise not_found(f"batch {quoted(batch_id)}") from None
    if context.batches.owner(scoped_batch) != producer:
        raise not_found(f"batch {quoted(batch_id)}")
    job_ids = context.batches.job_ids(scoped_batch)
    counts = context.batches.counts(job_ids)
    return BatchView(
        batch_id=scoped_batch,
        total=len(job_ids),
        done=done_count(counts),
        counts=dict(counts),
        job_ids=job_ids,
    )
