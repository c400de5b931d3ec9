"""Submit: turn a queued job into exactly one paid API task.

Safety comes from the job record, not from broker redelivery: ``queued → submitting``
is an atomic transition with one winner, the idempotency key is derived from the job id
and its create round, and a job that already has a task goes straight to polling.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.errors import (
    ApiUnavailableError,
    CreditBudgetExceededError,
    EvolinkError,
    MalformedResponseError,
    NbqError,
    QuotaBreakerOpenError,
    QuotaExceededError,
    RateLimitedError,
    RequestRejectedError,
    SubmissionsPausedUnauthorizedError,
    TransportError,
    UnauthorizedError,
)
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.owners import owners_of
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.jobs.store import STORE_AWAY
from nanobanana_queue.workers.leases import claim_owner
from nanobanana_queue.workers.redis_client import is_cluster
from nanobanana_queue.workers.resilience.credits import Hold, price_of, refusal
from nanobanana_queue.workers.resilience.fairshare import CAPPED_WAIT_S, Take, in_flight
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.common import fail, log, new_token, now
from nanobanana_queue.workers.stages.steps import Adopt, Done, Poll, Retry, Step, Submit

__all__ = ["QuotaBreakerOpenError", "SubmissionsPausedUnauthorizedError", "submit"]


def idempotency_key(record: JobRecord) -> str:
    """Same key for every attempt of one create round; a new round gets a new key."""
    return f"nbq-{record.job_id}-{record.create_seq}"


def submit(
    rt: Runtime,
    job_id: str,
    *,
    retries: int = 0,
    record: JobRecord | None = None,
) -> Step:
    """Run the submit stage once; returns what comes next (its label names the outcome).

    ``record`` is the job as the caller just read or wrote it (``nbq.generate``'s intake),
    saving a read; the claim below re-checks the state atomically either way.
    """
    if record is None or record.job_id != job_id:
        record = rt.store.get(job_id)
    if record is None:
        # Sent only for recorded jobs: the record vanished (store flushed or replaced)
        # before any API task existed. Nothing was paid; say so loudly.
        from nanobanana_queue.workers.stages.rescue import report_lost

        return report_lost(rt, job_id, stage="submit")
    if record.state is not JobState.QUEUED:
        # Another slot took this job already (or it ended): this message is a create
        # slot for the fairest job still waiting (workers/resilience/fairshare.py).
        served = _serve_waiting(rt, record)
        if served is not None:
            return served
    if record.is_terminal:
        return Done("terminal")
    if record.state is JobState.GENERATING and record.evolink_task_id:
        # A redelivered or duplicated submit: the task exists, go straight to polling.
        return Poll(
            job_id,
            record.poll_token or "",
            evolink_task_id=record.evolink_task_id,
            label="already_submitted",
        )
    if record.state is not JobState.QUEUED:
        return Done(f"busy_{record.state.value}")

    gate = _wait_before_create(rt, record)
    if gate is not None:
        return _defer(rt, record, *gate, retries=retries)
    return _take_and_create(rt, record, retries=retries)


_S = TypeVar("_S", Step, Step | None)

#: A slot whose taken jobs turn out not queued any more (cancelled, taken by a direct
#: re-send) takes again, at most this often.
MAX_TAKES = 10


def _take(rt: Runtime, record: JobRecord, *, queued: bool) -> Take:
    fair = rt.fair()
    took = fair.take(
        record.job_id,
        record.producer,
        record.priority,
        queued=queued,
        still_in_flight=lambda ids: in_flight(rt, ids),
    )
    metrics.fair_share(fair.label(record.producer), took.reason or took.kind)
    return took


def _taken_record(rt: Runtime, own: JobRecord, took: Take) -> JobRecord | None:
    """The taken job's record if it is still queued; else it is released (None)."""
    target = own if took.job_id == own.job_id else rt.store.get(took.job_id)
    if (
        target is not None
        and target.state is JobState.QUEUED
        and (target is own or not target.create_outcome_unknown)  # its own message decides
    ):
        return target
    rt.fair().release(took.job_id)
    return None


def _take_and_create(rt: Runtime, record: JobRecord, *, retries: int) -> Step:
    """The limiter granted a create to this (queued) job's message: the fairest waiting
    job gets it — this one, or another producer's; this one then waits for a later slot."""
    queued = True
    for _ in range(MAX_TAKES):
        took = _take(rt, record, queued=queued)
        if took.kind == "direct":
            step = _claim_and_create(rt, record, retries=retries)
            if step.label != "lost_race":
                return step
            queued = False  # another slot took it meanwhile: this one takes another job
            continue
        if took.kind == "none":
            if not queued and took.reason == "empty":
                return _unused_token(rt, Done("lost_race"))  # nothing else waits either
            return _unused_token(rt, _no_job_to_take(rt, record, took))
        target = _taken_record(rt, record, took)
        if target is not None:
            return _create_taken(rt, record, target, retries=retries)
    return _unused_token(rt, Done("nothing_to_take"))


def _unused_token(rt: Runtime, step: _S) -> _S:
    """The create the limiter granted found no job to make (nothing waiting, every waiting
    producer at its cap): its token goes back to the bucket, for the next slot."""
    rt.limiter.give_back("create")
    return step


def _serve_waiting(rt: Runtime, record: JobRecord) -> Step | None:
    """A message whose job is no longer queued is a slot for the fairest waiting job: if
    any job is listed, it asks the breaker and limiter, then takes (never the other way
    round: a job taken and then put back would be off its list meanwhile, and another
    slot would pass it over). None when nothing waits."""
    if not rt.fair().anything_listed():
        return None
    gate = _wait_before_create(rt, record, slot_only=True)
    if gate is not None:
        wait_s = gate[1] if gate[1] > 0 else CAPPED_WAIT_S
        return Submit(record.job_id, after_s=wait_s, label=f"slot_deferred_{gate[0]}")
    for _ in range(MAX_TAKES):
        took = _take(rt, record, queued=False)
        if took.kind == "none":
            capped = took.reason == "capped"
            return _unused_token(rt, _no_job_to_take(rt, record, took) if capped else None)
        if took.kind == "direct":
            return _unused_token(rt, None)
        target = _taken_record(rt, record, took)
        if target is not None:
            return _create_taken(rt, record, target, retries=0)
    return _unused_token(rt, None)


def _no_job_to_take(rt: Runtime, record: JobRecord, took: Take) -> Step:
    if took.reason != "capped":
        return Done("taken_by_another")  # its own job is being claimed by another slot
    # Every producer with jobs waiting is at its in-flight cap: the slot comes back.
    metrics.limiter_wait("producer_in_flight")
    if record.state is JobState.QUEUED:
        rt.store.apply(lifecycle.NOTE_WAITING, record.job_id, waiting_reason="producer_in_flight")
    return Submit(record.job_id, after_s=CAPPED_WAIT_S, label="deferred_producer_in_flight")


def _create_taken(rt: Runtime, own: JobRecord, target: JobRecord, *, retries: int) -> Step:
    """Create the taken job. Another job's create that must be retried is that job's own
    new ``nbq.submit`` (it was handed back to ``queued``, on no list: submitted directly)."""
    if target.job_id == own.job_id:
        return _claim_and_create(rt, target, retries=retries, taken=True)
    step = _claim_and_create(rt, target, retries=0, taken=True)
    if isinstance(step, Retry):
        return Submit(
            target.job_id, after_s=step.after_s, label=f"retry_{type(step.error).__name__}"
        )
    return step


def _claim_and_create(rt: Runtime, record: JobRecord, *, retries: int, taken: bool = False) -> Step:
    job_id = record.job_id
    held = _hold(rt, record)
    if held is not None and not held.held:
        if taken:
            rt.fair().release(job_id)
        return _over_budget(rt, record, held)
    # The claim is written before the request leaves: a worker killed between send and
    # answer leaves the job submitting, and whoever finds it next (the reconciler) knows
    # the outcome is unknown.
    first: dict[str, Any] = {} if record.first_create_at else {"first_create_at": now()}
    claimed, won = rt.store.apply(  # first_create_at: see workers/stages/adopt.py
        lifecycle.CLAIM_SUBMIT,
        job_id,
        **first,
        claimed_by=claim_owner(),  # whose lease lapsing says the outcome is unknown (leases.py)
        **(held.record_fields() if held is not None else {}),
    )
    if not won or claimed is None:
        if taken:
            rt.fair().release(job_id)
        return Done("lost_race")
    try:
        rt.fair().claimed(job_id, record.producer)
    except STORE_AWAY as exc:
        # Bookkeeping only: the claim is won, so the create goes ahead (a job left
        # `submitting` with nothing sent would later be taken for an unknown outcome).
        # The job's lease heals on a later take, whose claim then loses: nothing doubles.
        log.warning("fair_share_claim_unrecorded", job_id=job_id, error=type(exc).__name__)
    metrics.producer_create(rt.fair().label(record.producer))
    if held is not None and record.credits_held_on not in (None, held.day):
        # Queued on an earlier day: it now holds on today's book; the old hold goes.
        rt.credits().release(job_id, producer=record.producer, held_on=record.credits_held_on)
    return _create(rt, claimed, retries=retries)


def _hold(rt: Runtime, record: JobRecord) -> Hold | None:
    """The job's price held on today's budget right before its create (idempotent: a job
    that holds already is checked again, so a lowered limit or a new day still counts).
    Without a budget, nothing is held (None)."""
    ledger = rt.credits()
    if not ledger.budgeted:
        return None
    return ledger.hold(record.job_id, price_of(record.request), producer=record.producer)


def _over_budget(rt: Runtime, record: JobRecord, held: Hold) -> Step:
    """A daily budget no longer has room for this job (a lowered limit, a new day's
    spend): no create is sent, the job fails with a reason ``nbq retry`` can undo."""
    message = refusal(held, rt.credits(), price=price_of(record.request), producer=record.producer)
    return fail(
        rt,
        record.job_id,
        CreditBudgetExceededError(f"{message}; no create was sent"),
        via=lifecycle.FAIL.only_from(JobState.QUEUED),
        label="over_budget",
    )


def _wait_before_create(
    rt: Runtime, record: JobRecord, *, slot_only: bool = False
) -> tuple[str, float] | None:
    """``(reason, wait_s)`` if the shared breaker or limiters say wait.

    An earlier create of unknown outcome is held before the breaker is asked: holding it
    sends nothing (so it must not spend a probe), and its reason ("recovered after a lost
    submit") must not be overwritten by the breaker's while it waits.
    """
    if not slot_only and record.create_outcome_unknown and not may_resend_unknown(rt):
        return "outcome_unknown", 0.0  # (a slot for another job: that job's own matter)
    breaker_read, limiter_read = _gate_reads(rt)
    allowed, wait_s = rt.breaker.may_submit(**breaker_read)
    if not allowed:
        return "breaker", wait_s
    limit = rt.settings.max_in_flight
    if (
        limit
        and (
            rt.store.count_in_state(JobState.GENERATING)
            + rt.store.count_in_state(JobState.SUBMITTING)
        )
        >= limit
    ):
        metrics.limiter_wait("inflight")
        return "in_flight_limit", rt.settings.poll_min_interval_s * 2
    wait_s = rt.limiter.acquire("create", **limiter_read)
    if wait_s > 0:
        return "rate_limit", wait_s
    return None


def _gate_reads(rt: Runtime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The breaker's state and (an unlimited create kind) the create block, read in one
    round trip: the keyword arguments of ``may_submit`` and ``acquire``. Empty when they
    cannot go together (a rated kind's bucket script takes its token in ``acquire``):
    each gate then reads its own."""
    block_read = rt.limiter.gate_read("create")
    if block_read is None or rt.limiter.redis is not rt.breaker.redis:
        return {}, {}
    pipe = rt.breaker.redis.pipeline(transaction=False)
    pipe.execute_command(*rt.breaker.gate_read())  # type: ignore[no-untyped-call]
    pipe.execute_command(*block_read)  # type: ignore[no-untyped-call]
    state, blocked = pipe.execute()
    return {"state": state}, {"blocked": blocked}


def _defer(rt: Runtime, record: JobRecord, reason: str, wait_s: float, *, retries: int) -> Step:
    job_id = record.job_id
    if reason == "outcome_unknown":
        return hold_unknown_outcome(
            rt,
            record,
            from_state=JobState.QUEUED,
            detail=record.waiting_reason or "an earlier create got no answer",
        )
    if reason == "breaker":
        status = rt.breaker.status()
        rt.store.apply(
            lifecycle.NOTE_WAITING, job_id, waiting_reason=f"submissions paused: {status.kind}"
        )
        paused: NbqError = (
            SubmissionsPausedUnauthorizedError(f"API key rejected (401): {status.message}")
            if status.kind == "unauthorized"
            else QuotaBreakerOpenError(
                f"quota breaker open since {_utc(status.since)}: {status.code} {status.message}"
            )
        )
        return Retry.of(rt, paused, attempt=retries, wait_s=wait_s)
    rt.store.apply(lifecycle.NOTE_WAITING, job_id, waiting_reason=reason)
    return Submit(job_id, after_s=wait_s, label=f"deferred_{reason}")


def _already_recorded(current: JobRecord | None, task_id: str, token: str) -> bool:
    return (
        current is not None
        and current.state is JobState.GENERATING
        and current.evolink_task_id == task_id
        and current.poll_token == token
    )


def _create(rt: Runtime, record: JobRecord, *, retries: int) -> Step:
    job_id = record.job_id
    try:
        # The record holds the request's API JSON, validated once at intake: sent as is.
        task = rt.api().create_task(
            record.request,
            idempotency_key=idempotency_key(record),
            callback_url=_callback_url(rt, record),
        )
    except EvolinkError as exc:
        return _create_failed(rt, record, exc, retries=retries)

    if rt.breaker.last_was_probe and rt.breaker.close():
        log.warning("quota_breaker_closed", job_id=job_id, evolink_task_id=task.id)
    estimated = task.estimated_time_s
    credits = task.usage.credits_reserved or 0.0
    token = new_token()
    countdown_s = rt.schedule.first_countdown_s(
        _first_poll_estimate_s(rt, record, estimated), rt.rng
    )
    current, applied = rt.store.apply(
        lifecycle.TASK_CREATED,
        job_id,
        outage_patience_s=rt.settings.redis_failover_timeout_s,  # never drop a paid task's id
        durable=True,  # the paid task's id must survive a failover (NBQ_STORE_WAIT_REPLICAS)
        incr={"credits_paid": credits},  # and the hold is settled: the charge is paid
        evolink_task_id=task.id,
        estimated_time_s=estimated or 0.0,
        deadline_at=now() + rt.settings.poll_deadline_s,
        poll_token=token,
        next_poll_at=now() + countdown_s,
        progress=task.progress,
    )
    _record_owner_and_settle(rt, task.id, record, credits)
    metrics.credits_reserved(credits)
    if not applied and _already_recorded(current, task.id, token):
        applied = True  # our own write landed; only its answer was lost in an outage
    if not applied:
        if rt.store.get(job_id) is None:
            # The record vanished while the create was in flight: the task is paid, rescue.
            from nanobanana_queue.workers.stages.rescue import rescue

            return rescue(rt, job_id, task.id, via="submit")
        # Cancelled while the create was in flight: the task exists (and was paid) but
        # nobody wants it. The record still says so, for the credits report.
        gone, _ = rt.store.apply(
            lifecycle.NOTE_TASK_OF_GONE_JOB,
            job_id,
            incr={"credits_paid": credits},
            evolink_task_id=task.id,
        )
        if gone is not None and gone.is_terminal:
            rt.credits().ended(
                job_id,
                gone.state.value,
                paid=gone.credits_paid,
                producer=gone.producer,
                held_on=gone.credits_held_on,
            )
        log.warning("created_for_gone_job", job_id=job_id, evolink_task_id=task.id)
        return Done("created_but_job_moved")
    log.info(
        "task_created",
        job_id=job_id,
        evolink_task_id=task.id,
        estimated_time_s=estimated,
        first_poll_in_s=round(countdown_s, 3),
    )
    return Poll(job_id, token, after_s=countdown_s, evolink_task_id=task.id, label="created")


def _record_owner_and_settle(rt: Runtime, task_id: str, record: JobRecord, credits: float) -> None:
    """The task's owner recorded (``_record_owner``), then the charge settled on the credit
    book, in that order; in one round trip when both live on one plain Redis (a pipeline,
    not a transaction: each command runs whatever the other answered, as when they were
    sent one by one). A store away then loses both answers: the owner is reported not
    recorded and the settle's error raised, as a settle that failed alone was."""
    job_id = record.job_id
    ledger = rt.credits()
    owners = owners_of(rt.store)
    if ledger.redis is not owners.redis or is_cluster(owners.redis):
        _record_owner(rt, task_id, job_id)
        ledger.settle(job_id, credits, producer=record.producer, held_on=record.credits_held_on)
        return
    try:
        previous = ledger.settle_after(
            owners.record_command(task_id, job_id),
            job_id,
            credits,
            producer=record.producer,
            held_on=record.credits_held_on,
        )
    except STORE_AWAY as exc:
        log.warning(
            "task_owner_not_recorded", job_id=job_id, evolink_task_id=task_id, error=str(exc)
        )
        raise
    if isinstance(previous, STORE_AWAY):  # the owner's write alone failed; settled
        log.warning(
            "task_owner_not_recorded", job_id=job_id, evolink_task_id=task_id, error=str(previous)
        )
    elif isinstance(previous, Exception):
        raise previous
    else:
        owners.recorded(task_id, job_id, previous)


def _record_owner(rt: Runtime, task_id: str, job_id: str) -> None:
    """This job's create made the task: it is its one owner (workers/jobs/owners.py).

    After the task id is recorded (that write has the outage patience; this one must not
    stand in its way): a store away now leaves the task unindexed, which an adoption
    still checks by the task's creation time."""
    try:
        owners_of(rt.store).record(task_id, job_id)
    except STORE_AWAY as exc:
        log.warning(
            "task_owner_not_recorded", job_id=job_id, evolink_task_id=task_id, error=str(exc)
        )


def _outcome_unknown(exc: EvolinkError) -> bool:
    """A create that may have made (and charged) a task: no answer after sending, or a
    2xx we could not read (the call worked, its answer was garbled)."""
    return isinstance(exc, MalformedResponseError) or (
        isinstance(exc, TransportError) and exc.create_may_have_happened
    )


def _create_failed(rt: Runtime, record: JobRecord, exc: EvolinkError, *, retries: int) -> Step:
    """What a failed create leads to, by the error's class: a paused key or quota waits
    (its class's rule), an unknown outcome is held, an error without a retry rule fails
    the job, anything else is retried with backoff and fails ``api_unavailable`` at last."""
    job_id = record.job_id
    unknown = _outcome_unknown(exc)
    log.warning(
        "create_failed",
        job_id=job_id,
        error=type(exc).__name__,
        status=exc.status_code,
        code=exc.code,
        action="outcome_unknown" if unknown else exc.retry_rule.name if exc.retry_rule else "fail",
    )
    pauses = isinstance(exc, QuotaExceededError | UnauthorizedError)
    if not pauses:
        rt.breaker.probe_inconclusive()  # if this was a probe, the next one comes at once
    if unknown and not may_resend_unknown(rt):
        return hold_unknown_outcome(rt, record, from_state=JobState.SUBMITTING, detail=exc.message)
    if exc.retry_rule is None and not unknown:
        if isinstance(exc, RequestRejectedError) and exc.status_code == 400 and exc.code:
            exc.reason = exc.code  # the API's own code says more than invalid_request
        return fail(rt, job_id, exc)  # the answer said: no task

    # Every other answer says no task was made (or, resending an unknown one under the
    # operator's chosen policy, records that it is unknown).
    # The breaker's wording (README, "waiting_reason"), not the API's code, while paused.
    if isinstance(exc, QuotaExceededError):
        reason = "submissions paused: quota"
    elif isinstance(exc, UnauthorizedError):
        reason = "submissions paused: unauthorized"
    else:
        reason = exc.reason
    rt.store.apply(
        lifecycle.HAND_BACK_UNKNOWN if unknown else lifecycle.HAND_BACK,
        job_id,
        waiting_reason=reason,
    )

    if isinstance(exc, QuotaExceededError):
        rt.breaker.trip(kind="quota", code=exc.code, message=exc.message, daily=exc.is_daily_limit)
        _, wait_s = rt.breaker.may_submit()
        return Retry.of(rt, exc, attempt=retries, wait_s=wait_s)
    if isinstance(exc, UnauthorizedError):
        rt.breaker.trip(kind="unauthorized", code=exc.code, message=exc.message)
        log.error(
            "api_key_rejected",
            job_id=job_id,
            message="submissions paused: fix NBQ_EVOLINK_API_KEY, then run `nbq quota --reset`",
        )
        return Retry.of(rt, exc, attempt=retries)
    if isinstance(exc, RateLimitedError):
        rt.limiter.penalise("create", exc.retry_after_s)
    return Retry.of(
        rt,
        exc,
        attempt=retries,
        fail_from=(JobState.QUEUED,),
        exhausted=ApiUnavailableError(
            f"create kept failing after {retries + 1} attempts: {exc.message}"
        ),
    )


def may_resend_unknown(rt: Runtime) -> bool:
    """Whether a create of unknown outcome may be sent again (an operator's opt-in)."""
    return rt.settings.idempotent_creates or rt.settings.at_least_once_creates


def hold_unknown_outcome(
    rt: Runtime, record: JobRecord, *, from_state: JobState, detail: str
) -> Step:
    """Never resend: wait for the task's callback if callbacks are on, else fail the job.

    A callback that already came while the job could not take it (``callback_task_id``)
    is adopted at once (``nbq.adopt``).
    """
    from nanobanana_queue.workers.stages.adopt import unknown_outcome_error

    job_id = record.job_id
    rt.credits().record_unknown()
    if _callback_url(rt, record) is None:
        return fail(
            rt,
            job_id,
            unknown_outcome_error(detail),
            via=lifecycle.FAIL_UNKNOWN_OUTCOME.only_from(from_state),
            label="failed_outcome_unknown",
        )
    wait_s = rt.settings.outcome_unknown_wait_s
    until = now() + wait_s
    held, applied = rt.store.apply(
        lifecycle.HOLD_UNKNOWN_OUTCOME.only_from(from_state),
        job_id,
        outcome_deadline_at=until,
        waiting_reason=(
            f"create outcome unknown ({detail[:200]}); waiting for the task's callback "
            f"until {_utc(until)}"
        ),
    )
    if not applied or held is None:
        return Done("lost_race")
    log.warning(
        "create_outcome_unknown",
        job_id=job_id,
        waiting_for="callback",
        outcome_deadline_at=until,
        detail=detail[:200],
    )
    if held.callback_task_id:
        return Adopt(job_id, held.callback_task_id, source="callback", label="adopting")
    return Done("waiting_outcome_unknown")


def _utc(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "?"
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _callback_url(rt: Runtime, record: JobRecord) -> str | None:
    """The per-job callback URL when NBQ_PUBLIC_CALLBACK_URL is set; None means poll only."""
    from nanobanana_queue.workers.callbacks import callback_url

    return callback_url(rt.settings, record.job_id, record.create_seq)


def _first_poll_estimate_s(rt: Runtime, record: JobRecord, estimated: float | None) -> float | None:
    """With a callback coming, the first poll is only a late fallback (a larger estimate)."""
    if _callback_url(rt, record) is None:
        return estimated
    base = estimated if estimated and estimated > 0 else rt.settings.default_estimated_time_s
    return base * rt.settings.callback_first_poll_factor
