"""Intake: validate a request and create its job record (idempotent on ``job_id``).

Producers call this with the model they validated (no second check) before sending
``nbq.generate``; the task calls it again, which finds the producer's record and checks
nothing, so a request is validated once: a message sent by another service with
``send_task`` (no record yet) is validated here, once. The record keeps the request's API
JSON, which the submit stage sends as is.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from workers import metrics
from workers.evolink.models import GenerationRequest
from workers.failures import record_failure
from workers.jobs.ids import InvalidJobIdError, new_job_id, scoped_job_id
from workers.jobs.record import JobError, JobRecord
from workers.jobs.state import JobState
from workers.runtime import Runtime
from workers.stages.common import log


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming its field: ``size: Input should be ...``."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "request"
        parts.append(f"{field}: {error['msg']}")
    return "; ".join(parts)


def _proven(rt: Runtime, producer: str, job_id: str | None, proof: str | None) -> bool:
    """A raw message speaks for ``producer`` only with the proof for its own job id."""
    from workers.producer_keys import proof_matches

    return job_id is not None and proof_matches(rt.settings, producer, job_id, proof)


def intake(
    rt: Runtime,
    *,
    request: dict[str, Any] | GenerationRequest,
    job_id: str | None,
    producer: str | None = None,
    batch_id: str | None = None,
    raw: bool = False,
    producer_proof: str | None = None,
) -> JobRecord | None:
    """The job's record: existing, new and queued, or new and failed (invalid request).

    ``raw``: the call comes from a broker message (``nbq.generate``), not from a producer
    in this process: a new job may name a producer only with its ``producer_proof``
    (workers/producer_keys.py). Returns None when the job id itself is unusable or the
    producer is not proven (nothing is recorded).
    """
    try:
        # Ids are scoped per producer (workers/jobs/ids.py): another producer's job is
        # never returned, whatever id is asked for.
        chosen = scoped_job_id(producer, job_id) if job_id else None
        job_id = chosen or scoped_job_id(producer, new_job_id())
    except InvalidJobIdError as exc:
        log.warning("intake_refused", reason=str(exc))
        return None
    if chosen is not None:
        # Only a caller-chosen id can exist already (a fresh id cannot): one round trip
        # fewer per enqueue. ``create`` is itself idempotent, this only skips validation.
        existing = rt.store.get(job_id)
        if existing is not None:
            return existing
    if raw and producer is not None and not _proven(rt, producer, chosen, producer_proof):
        metrics.ownership_refused("generate", "unproven_producer")
        log.warning(
            "intake_refused",
            job_id=job_id,
            producer=producer,
            reason="the message names a producer without a valid producer_proof "
            "(docs/security.md: producer identity)",
        )
        return None
    try:
        valid = (
            request
            if isinstance(request, GenerationRequest)
            else GenerationRequest.model_validate(request)
        )
    except ValidationError as exc:
        message = describe_validation_error(exc)
        error = JobError(code="invalid_request", message=message)
        failed = JobRecord(job_id=job_id, state=JobState.FAILED, producer=producer, error=error)
        record, created = rt.store.create(failed)
        if not created:
            return record  # a duplicate delivery: counted (and shown failed) once
        metrics.job_failed("invalid_request")
        record_failure(job_id, error)
        log.warning("intake_invalid_request", job_id=job_id, error_message=message)
        return record
    record, _ = rt.store.create(
        JobRecord(job_id=job_id, request=valid.to_api_json(), producer=producer, batch_id=batch_id)
    )
    return record
