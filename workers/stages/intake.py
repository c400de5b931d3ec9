"""Intake: validate a request and create its job record (idempotent on ``job_id``).

Producers call this with the model they validated (no second check) before sending
``nbq.generate``; the task calls it again, which finds the producer's record and checks
nothing, so a request is validated once: a message sent by another service with
``send_task`` (no record yet) is validated here, once. The record keeps the request's API
JSON, which the submit stage sends as is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis
from pydantic import ValidationError

from nanobanana_queue.workers import metrics, tracing
from nanobanana_queue.workers.errors import (
    CreditBudgetExceededError,
    InvalidRequestError,
    NbqError,
    StoreUnreachableError,
)
from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.jobs.ids import InvalidJobIdError, new_job_id, scoped_job_id
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.resilience.credits import Hold, price_of, refusal
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.common import log
from nanobanana_queue.workers.stages.steps import Done, Fail, Generate, Retry, Step


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming its field: ``size: Input should be ...``."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "request"
        parts.append(f"{field}: {str(error['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def _proven(rt: Runtime, producer: str, job_id: str | None, proof: str | None) -> bool:
    """A raw message speaks for ``producer`` only with the proof for its own job id."""
    from nanobanana_queue.workers.producer_keys import proof_matches

    return job_id is not None and proof_matches(rt.settings, producer, job_id, proof)


def _existing(
    rt: Runtime, chosen: str | None, request: dict[str, Any] | GenerationRequest
) -> JobRecord | None:
    """The record of a caller-chosen id, if it exists (a conflicting request is noted).

    Only a caller-chosen id can exist already (a fresh id cannot): one round trip fewer
    per enqueue. ``create`` is itself idempotent, this only skips validation.
    """
    if chosen is None:
        return None
    existing = rt.store.get(chosen)
    if existing is not None:
        _note_conflict(existing, request)
    return existing


def _refused_unproven(
    rt: Runtime, job_id: str, producer: str | None, chosen: str | None, proof: str | None
) -> bool:
    """True (logged and counted) when a raw message names a producer it cannot prove."""
    if producer is None or _proven(rt, producer, chosen, proof):
        return False
    metrics.ownership_refused("generate", "unproven_producer")
    log.warning(
        "intake_refused",
        job_id=job_id,
        producer=producer,
        reason="the message names a producer without a valid producer_proof "
        "(docs/security.md: producer identity)",
    )
    return True


def intake(rt: Runtime, **kwargs: Any) -> JobRecord | None:
    """The job's record (see :func:`admit`, whose keyword arguments it takes)."""
    return admit(rt, **kwargs)[0]


def admit(
    rt: Runtime,
    *,
    request: dict[str, Any] | GenerationRequest,
    job_id: str | None,
    producer: str | None = None,
    batch_id: str | None = None,
    held: Hold | None = None,
    priority: str | None = None,
    notify_url: str | None = None,
    on_done: tuple[str, str] | dict[str, str] | None = None,
    raw: bool = False,
    producer_proof: str | None = None,
) -> tuple[JobRecord | None, NbqError | None]:
    """The job's record, and the error when this very call recorded it ``failed`` (the
    ``nbq.generate`` task raises it, so Flower lists the failure once). The record:
    existing, new and queued, or new and failed (invalid request, or over a daily credit
    budget).

    ``held``: the price the producer already held for this job; without it (a raw
    ``nbq.generate`` from another service) a new job holds its price here, and one over a
    budget is recorded ``failed`` with ``credit_budget_exceeded``.

    ``raw``: the call comes from a broker message (``nbq.generate``), not from a producer
    in this process: a new job may name a producer only with its ``producer_proof``
    (workers/producer_keys.py), checked before any price is held. Returns None when the
    job id itself is unusable or the producer is not proven (nothing is recorded, nothing
    held).
    """
    try:
        # Ids are scoped per producer (workers/jobs/ids.py): another producer's job is
        # never returned, whatever id is asked for.
        chosen = scoped_job_id(producer, job_id) if job_id else None
        job_id = chosen or scoped_job_id(producer, new_job_id())
    except InvalidJobIdError as exc:
        log.warning("intake_refused", reason=str(exc))
        return None, None
    existing = _existing(rt, chosen, request)
    if existing is not None:
        return existing, None
    if raw and _refused_unproven(rt, job_id, producer, chosen, producer_proof):
        return None, None
    try:
        valid = (
            request
            if isinstance(request, GenerationRequest)
            else GenerationRequest.model_validate(request)
        )
        message = _notify_refusal(rt, valid, producer, notify_url)
        if message is None and isinstance(on_done, dict):
            on_done = _on_done(on_done)
    except ValidationError as exc:
        message = describe_validation_error(exc)
    except ValueError as exc:  # an on_done that cannot be honoured (OnDoneError)
        message = str(exc)
    if message is not None:
        invalid = InvalidRequestError(message)
        error = invalid.job_error()
        failed = JobRecord(job_id=job_id, state=JobState.FAILED, producer=producer, error=error)
        record, created = rt.store.create(failed)
        if not created:
            return record, None  # a duplicate delivery: counted (and shown failed) once
        metrics.job_failed(error.code)
        invalid.failed_job(job_id, error)
        log.warning("intake_invalid_request", job_id=job_id, error_message=message)
        return record, invalid
    api_json = valid.to_api_json()
    ledger = rt.credits()
    if held is None and ledger.budgeted:
        held = ledger.hold(job_id, price_of(api_json), producer=producer)
        if not held.held:
            return _refused(rt, job_id, producer, batch_id, api_json, held)
    record, created = rt.store.create(
        JobRecord(
            job_id=job_id,
            request=api_json,
            producer=producer,
            batch_id=batch_id,
            priority=priority or "normal",
            traceparent=tracing.current_traceparent(),
            notify_url=notify_url,
            on_done_task=on_done[0] if isinstance(on_done, tuple) else None,
            on_done_queue=on_done[1] if isinstance(on_done, tuple) else None,
            **(held.record_fields() if held else {}),
        )
    )
    if created:
        rt.fair().enqueued(job_id, producer, record.priority)  # it waits from now on
    return record, None


def generate(
    rt: Runtime,
    request: dict[str, Any],
    job_id: str | None = None,
    producer: str | None = None,
    batch_id: str | None = None,
    notify_url: str | None = None,
    on_done: dict[str, str] | None = None,
    priority: str | None = None,
    producer_proof: str | None = None,
    *,
    retries: int = 0,
) -> Step:
    """``nbq.generate``: record the job if new (a raw message's request validated here,
    once), then submit it in the same run.

    Intake then submit is the pipeline's one declared composition (workers/pipeline.py,
    ``GENERATE.composes``): every job enters here and intake only writes its record, so a
    separate ``nbq.submit`` hop would cost every job a broker round trip and a queue wait.
    A retry is this same message again; a job whose id was minted here has it pinned in
    that message, so the retry finds this record instead of minting a second job (and a
    second paid create).
    """
    record, failed = admit(
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
    if failed is not None:  # this run recorded the job failed: its task raises why
        return Fail(failed, label=f"refused_{failed.reason}")
    if record is None or record.is_terminal:
        return Done("refused" if record is None else "terminal")
    from nanobanana_queue.workers.stages.submit import submit

    pinned = (
        None
        if job_id is not None
        else Generate(
            record.job_id,
            request,
            producer=producer,
            batch_id=batch_id,
            priority=priority or "normal",
            notify_url=notify_url,
            on_done=on_done,
            producer_proof=producer_proof,
        )
    )
    try:
        step = submit(rt, record.job_id, retries=retries, record=record)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if pinned is None:
            raise  # the task's own store-outage retry sends this message again as is
        outage = StoreUnreachableError(f"job store unreachable: {type(exc).__name__}: {exc}")
        return Retry.of(rt, outage, attempt=retries, again=pinned)
    if pinned is not None and isinstance(step, Retry) and step.again is None:
        return replace(step, again=pinned)
    return step


def _on_done(value: dict[str, str]) -> tuple[str, str] | None:
    from nanobanana_queue.workers.notify.on_done import check_on_done

    return check_on_done(value)


def _notify_refusal(
    rt: Runtime, valid: GenerationRequest, producer: str | None, notify_url: str | None
) -> str | None:
    """A raw message's notify_url or own callback_url that cannot be honoured (the
    Producer refuses the same before sending anything)."""
    from nanobanana_queue.workers.notify.config import (
        NotifyConfig,
        NotifyRefusedError,
        own_callback_refusal,
    )

    refusal = own_callback_refusal(rt.settings, valid)
    if refusal is not None or notify_url is None:
        return refusal
    try:
        NotifyConfig.from_settings(rt.settings).check(producer, notify_url)
    except NotifyRefusedError as exc:
        return str(exc)
    return None


def _refused(
    rt: Runtime,
    job_id: str,
    producer: str | None,
    batch_id: str | None,
    api_json: dict[str, Any],
    held: Hold,
) -> tuple[JobRecord, NbqError | None]:
    """A raw message over a budget: recorded ``failed`` (its sender can read why), never
    submitted. ``nbq retry`` sends it again once the budget allows."""
    message = refusal(held, rt.credits(), price=price_of(api_json), producer=producer)
    refused = CreditBudgetExceededError(message)
    error = refused.job_error()
    failed = JobRecord(
        job_id=job_id,
        state=JobState.FAILED,
        request=api_json,
        producer=producer,
        batch_id=batch_id,
        error=error,
    )
    record, created = rt.store.create(failed)
    if not created:
        return record, None
    metrics.job_failed(error.code)
    refused.failed_job(job_id, error)
    log.warning("intake_over_budget", job_id=job_id, budget=held.budget, error_message=message)
    return record, refused


def _note_conflict(existing: JobRecord, request: dict[str, Any] | GenerationRequest) -> None:
    """A raw message naming a used id with another request: the job stays as it is; say
    so in the log (no one to answer). The producer API compares on its own and raises
    ``JobIdConflictError`` (it passes a validated model, not a dict)."""
    if not isinstance(request, dict) or existing.holds_request(request):
        return  # the producer's call, its own message, or a redelivery: the stored JSON
    try:
        same = existing.holds_request(GenerationRequest.model_validate(request).to_api_json())
    except ValidationError:
        same = False
    if not same:
        log.warning("job_id_conflict", job_id=existing.job_id, kept="the existing job")
