"""Adopt: attach an existing API task to a job instead of paying for a new one.

A create whose answer was lost may still have made (and charged) its task. Two sources
know the task's id: its verified callback (the per-job token URL) and a person who found
it in the vendor's dashboard (``nbq adopt``). Either way the id is only a claim: the task
is re-fetched from the API before the job takes it, and the job moves with one
state-checked transition (``outcome_unknown`` — or, by a person, ``failed`` — →
``generating``), so a duplicate adoption finds the job moved and does nothing.

Every source is checked the same way (the worker is the one place a task becomes a
job's, whatever sent ``nbq.adopt``), and a claim that fails a check is refused — logged
``adoption_refused``, counted in ``nbq_ownership_refused_total{entry, reason}``, nothing
stored, nothing charged:

* ``foreign_task``: the task is owned by another job (``workers/jobs/owners.py``): its
  create answered for that job, or that job adopted it first;
* ``task_before_job``: the vendor's ``created`` time of the task is before this job's
  first create was sent (less ``CLOCK_SKEW_S``): it cannot be this job's;
* ``task_time_unknown``: the task object has no ``created`` time to check;
* ``stale_round`` (callbacks only): a task this job has since replaced. A person may
  re-attach one (it is counted once: a task the job already counted adds nothing).

Adoption never pays: a task found ``failed`` ends the job ``failed`` with the task's own
reason; only a person who accepts a new paid create (``nbq adopt --yes``,
``Producer.adopt(..., accept_may_pay_twice=True)``, exactly like ``nbq retry``) lets a
retryable failure be re-created. A callback never can.
"""

from __future__ import annotations

from typing import Any, Literal

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.errors import (
    EvolinkError,
    NotFoundError,
    OutcomeUnknownError,
    TaskFailedError,
)
from nanobanana_queue.workers.evolink.models import Task, TaskStatus
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.lifecycle import Transition
from nanobanana_queue.workers.jobs.owners import owners_of
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.common import log, new_token, now
from nanobanana_queue.workers.stages.steps import Done, Fail, Poll, Retry, Step

Source = Literal["callback", "person"]

#: How each source adopts: a callback only rescues a waiting job; a person may also
#: revive a failed one (e.g. ``outcome_unknown`` past its deadline).
ADOPTION: dict[str, Transition] = {"callback": lifecycle.ADOPT, "person": lifecycle.MANUAL_ADOPT}
#: Where each source may adopt from.
ADOPTABLE_FROM: dict[str, frozenset[JobState]] = {
    source: move.sources for source, move in ADOPTION.items()
}
#: What a person reads when their ``nbq adopt`` is refused, by reason.
WHY_REFUSED = {
    "foreign_task": "the task belongs to another job",
    "task_before_job": "the task was created before this job's first create was sent",
    "task_time_unknown": "the API gives no creation time to check the task against the job",
}
#: Clock difference tolerated between the vendor's ``created`` and our own clock (s).
CLOCK_SKEW_S = 30.0


def earliest_task_time(record: JobRecord) -> float:
    """The earliest a task of this job can have been created (epoch s): its first create
    was sent then (a record from before that field: the job's own creation)."""
    return (record.first_create_at or record.created_at) - CLOCK_SKEW_S


def credits_new(record: JobRecord, task: Task) -> bool:
    """The task was never counted on this job: not its current task, nor one it replaced
    (those were counted when their create answered). Counted once, never twice."""
    return task.id != record.evolink_task_id and task.id not in record.previous_task_ids


def task_credits(record: JobRecord, task: Task) -> float:
    """What adopting ``task`` adds to the job's credits (0 for a task already counted)."""
    return (task.usage.credits_reserved or 0.0) if credits_new(record, task) else 0.0


def refuse(
    rt: Runtime, record: JobRecord, task_id: str, *, entry: str, reason: str, owner: str | None
) -> Done:
    """Refuse a claim on ``task_id`` for ``record``'s job: logged, counted, nothing stored."""
    metrics.ownership_refused(entry, reason)
    log.warning(
        "adoption_refused",
        job_id=record.job_id,
        evolink_task_id=task_id,
        entry=entry,
        reason=reason,
        owned_by_other_job=owner is not None and owner != record.job_id,
    )
    if record.callback_task_id == task_id and record.state in lifecycle.FORGET_DENIED_TASK.sources:
        # Forget a noted claim that was refused (the reconciler would re-send it).
        rt.store.apply(
            lifecycle.FORGET_DENIED_TASK.only_from(record.state),
            record.job_id,
            expect={"callback_task_id": task_id},
        )
    if entry == "person" and record.state in lifecycle.NOTE_ADOPT_REFUSED.sources:
        _tell_the_person(rt, record.job_id, task_id, WHY_REFUSED.get(reason, reason), "person")
    return Done(f"refused_{reason}")


def ownership_problem(rt: Runtime, record: JobRecord, task: Task) -> tuple[str, str | None] | None:
    """Why ``task`` cannot be ``record``'s job's, as ``(reason, owner)``; None if it can."""
    owner = owners_of(rt.store).owner(task.id)
    if owner is not None and owner != record.job_id:
        return "foreign_task", owner
    if owner == record.job_id:
        return None  # this job's own create made it (or it already adopted it)
    if task.created is None:
        return "task_time_unknown", None
    if task.created < earliest_task_time(record):
        return "task_before_job", None
    return None


def adopt(
    rt: Runtime,
    job_id: str,
    task_id: str,
    *,
    source: Source = "callback",
    retries: int = 0,
) -> Step:
    """Re-fetch ``task_id`` and make it the job's task; returns what comes next.

    A task found failed ends the job failed with its reason, unless a person consented to
    a new paid create for this very task (``adopt_consent_task_id`` on the record, written
    by ``Producer.adopt(accept_may_pay_twice=True)`` / ``nbq adopt --yes``; a message
    cannot carry it, so no broker client can make a job pay again).
    """
    adoption = ADOPTION[source]
    allowed = adoption.sources
    record = rt.store.get(job_id)
    if record is None:
        return Done("missing")
    if record.state is JobState.GENERATING and record.evolink_task_id == task_id:
        return Done("already_adopted")
    if record.state not in allowed:
        log.info("adopt_refused", job_id=job_id, evolink_task_id=task_id, state=record.state)
        return Done(f"not_adoptable_{record.state.value}")
    owner = owners_of(rt.store).owner(task_id)
    if owner is not None and owner != job_id:
        # Refused before any API call: another job's create made (and paid for) it.
        return refuse(rt, record, task_id, entry=source, reason="foreign_task", owner=owner)
    if source == "callback" and task_id in record.previous_task_ids:
        # A callback of a task this job has replaced: never what it waits for now.
        return refuse(rt, record, task_id, entry=source, reason="stale_round", owner=None)
    fetched = _fetch(rt, record, task_id, source=source, retries=retries)
    if not isinstance(fetched, Task):
        return fetched
    task = fetched
    refused = _check_and_claim(rt, record, task, source=source)
    if refused is not None:
        return refused
    consented = source == "person" and record.adopt_consent_task_id == task.id
    if task.status is TaskStatus.FAILED and not consented:
        return _adopted_failed(rt, record, task, source=source)

    new_task = record.evolink_task_id != task.id
    previous = [t for t in record.previous_task_ids if t != task.id]
    if record.evolink_task_id and new_task:
        previous.append(record.evolink_task_id)
    credits = task_credits(record, task)
    token = new_token()
    moved, applied = rt.store.apply(
        adoption,
        job_id,
        incr={"paid_creates": 1 if credits_new(record, task) else 0, "credits_paid": credits},
        evolink_task_id=task.id,  # and its create's hold is settled by this charge
        previous_task_ids=previous,
        estimated_time_s=task.estimated_time_s or 0.0,
        deadline_at=now() + rt.settings.poll_deadline_s,
        poll_token=token,
        next_poll_at=now(),
        progress=task.progress,
    )
    if not applied or moved is None:
        return Done("lost_race")
    _settle(rt, record, credits)
    log.warning(
        "task_adopted",
        job_id=job_id,
        evolink_task_id=task.id,
        source=source,
        from_state=record.state.value,
        status=task.status.value,
    )
    # The poll stage takes it from here, in its own message (stages never run each other):
    # it re-fetches the task, so a task that finished meanwhile is seen as it is now.
    return Poll(job_id, token, evolink_task_id=task.id, label="adopted")


def adopt_message(
    rt: Runtime,
    job_id: str,
    task_id: str,
    *,
    source: str = "callback",
    retries: int = 0,
) -> Step:
    """An ``nbq.adopt`` message's kwargs, as whoever sent it wrote them (anything but
    ``"person"`` is a callback's). Nothing in a message can accept a new paid create: only
    a person's consent on the job record can (``Producer.adopt(accept_may_pay_twice=)``)."""
    kind: Source = "person" if source == "person" else "callback"
    return adopt(rt, job_id, task_id, source=kind, retries=retries)


def _fetch(
    rt: Runtime, record: JobRecord, task_id: str, *, source: Source, retries: int
) -> Task | Step:
    """The task as the API knows it now, or the step when it cannot be had."""
    job_id = record.job_id
    try:
        return rt.api().get_task(task_id)
    except NotFoundError:
        log.warning("adopt_task_not_found", job_id=job_id, evolink_task_id=task_id, source=source)
        # Forget a callback's claim the API denies (the reconciler would re-send it).
        rt.store.apply(
            lifecycle.FORGET_DENIED_TASK.only_from(*ADOPTION[source].sources),
            job_id,
            expect={"callback_task_id": task_id},
        )
        _tell_the_person(rt, job_id, task_id, "the API does not know this task", source)
        return Done("task_not_found")
    except EvolinkError as exc:
        if exc.retry_rule is None or not exc.retry_rule.bounded:
            # Fails for good (or waits on a paused key or quota): say so, send nothing.
            log.warning("adopt_failed", job_id=job_id, evolink_task_id=task_id, error=exc.message)
            _tell_the_person(rt, job_id, task_id, exc.message, source)
            return Done("adopt_failed")
        # Transient: retried with backoff; past the budget the task ends with the error
        # (no job fails: the job keeps waiting, the reconciler re-sends the adoption).
        return Retry.of(rt, exc, attempt=retries)


def _check_and_claim(rt: Runtime, record: JobRecord, task: Task, *, source: Source) -> Done | None:
    """Refuse a task that cannot be the job's; else claim it (atomic: of two jobs naming
    one task, one wins). None: the task is now the job's."""
    problem = ownership_problem(rt, record, task)
    if problem is not None:
        reason, owner = problem
        return refuse(rt, record, task.id, entry=source, reason=reason, owner=owner)
    owner = owners_of(rt.store).claim(task.id, record.job_id)
    if owner != record.job_id:
        return refuse(rt, record, task.id, entry=source, reason="foreign_task", owner=owner)
    return None


def _adopted_failed(rt: Runtime, record: JobRecord, task: Task, *, source: Source) -> Step:
    """The task to adopt had failed: the job ends failed with the task's reason, and no
    new create is sent (adoption never pays). A person may re-create with --yes."""
    job_id = record.job_id
    code = task.error.code if task.error else "unknown_error"
    detail = task.error.message if task.error else ""
    failure = TaskFailedError.of(code, detail)
    failure.retryable = False  # re-creating it is a new paid create: a person decides
    error = failure.job_error(
        message=(
            f"the adopted task {task.id} had failed ({code}: {detail[:300]}); it was not "
            f"re-created because that is a new paid create: `nbq retry {job_id}` or "
            f"`nbq adopt {job_id} {task.id} --yes` to send one"
        ),
    )
    new_task = record.evolink_task_id != task.id
    previous = [t for t in record.previous_task_ids if t != task.id]
    if record.evolink_task_id and new_task:
        previous.append(record.evolink_task_id)
    credits = task_credits(record, task)
    fields: dict[str, Any] = {
        "incr": {
            "paid_creates": 1 if credits_new(record, task) else 0,
            "credits_paid": credits,
        },
        "evolink_task_id": task.id,  # and its create's hold is settled by this charge
        "previous_task_ids": previous,
    }
    failed_before = record.state is JobState.FAILED
    if failed_before:
        moved, applied = rt.store.apply(
            lifecycle.NOTE_FAILED_TASK_ADOPTED, job_id, error=error, **fields
        )
        if not applied or moved is None:
            return Done("lost_race")
    else:
        from nanobanana_queue.workers.stages.common import fail_job

        failure.message = error.message
        if fail_job(rt, job_id, failure, via=lifecycle.ADOPT_FAILED_TASK, **fields) is None:
            return Done("lost_race")
    _settle(rt, record, credits)
    log.warning(
        "failed_task_adopted",
        job_id=job_id,
        evolink_task_id=task.id,
        source=source,
        code=code,
        detail="the job ends failed with the task's reason; no new create was sent",
    )
    if failed_before:  # this run failed nothing: the job was failed already
        return Done("adopted_failed_task")
    return Fail(failure, label="adopted_failed_task")


def _tell_the_person(rt: Runtime, job_id: str, task_id: str, why: str, source: Source) -> None:
    """A person's ``nbq adopt`` waits for the worker's verdict: put it on the record."""
    if source == "person":
        rt.store.apply(
            lifecycle.NOTE_ADOPT_REFUSED,
            job_id,
            waiting_reason=f"adopt of task {task_id} refused: {why}"[:300],
        )


def unknown_outcome_error(detail: str, *, waited_s: float | None = None) -> OutcomeUnknownError:
    """The failure a person reads when a create's outcome stayed unknown."""
    why = (
        f"no callback for its task arrived within {waited_s:.0f}s"
        if waited_s is not None
        else "no answer said whether it made a task"
    )
    return OutcomeUnknownError(
        f"the create may have reached the API and been charged ({detail}); {why}, and it "
        "was not sent again because a resend could pay twice (the vendor does not "
        "document Idempotency-Key support). Find the task in the Evolink dashboard and "
        "attach it: `nbq adopt JOB_ID TASK_ID`; or send a new create: "
        "`nbq retry JOB_ID --yes` (may pay twice)"
    )


def _settle(rt: Runtime, record: JobRecord, credits: float) -> None:
    """Count an adopted task's new credits once and settle the job's hold with them."""
    if credits:
        metrics.credits_reserved(credits)
        rt.credits().settle(
            record.job_id, credits, producer=record.producer, held_on=record.credits_held_on
        )
