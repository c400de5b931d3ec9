"""Adopt: attach an existing API task to a job instead of paying for a new one.

A create whose answer was lost may still have made (and charged) its task. Two sources
know the task's id: its verified callback (the per-job token URL) and a person who found
it in the vendor's dashboard (``nbq adopt``). Either way the id is only a claim: the task
is re-fetched from the API before the job takes it, and the job moves with one
state-checked transition (``outcome_unknown`` — or, by a person, ``failed`` — →
``generating``), so a duplicate adoption finds the job moved and does nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from workers import metrics
from workers.evolink.errors import EvolinkError, NotFoundError
from workers.jobs import lifecycle
from workers.jobs.lifecycle import Transition
from workers.jobs.record import JobError
from workers.jobs.state import JobState
from workers.policy.errors import Action, action_for
from workers.policy.retry import RetryCause
from workers.runtime import Runtime
from workers.stages.common import log, new_token, now, retry
from workers.stages.steps import Done, Step

Source = Literal["callback", "person"]

#: How each source adopts: a callback only rescues a waiting job; a person may also
#: revive a failed one (e.g. ``outcome_unknown`` past its deadline).
ADOPTION: dict[str, Transition] = {"callback": lifecycle.ADOPT, "person": lifecycle.MANUAL_ADOPT}
#: Where each source may adopt from.
ADOPTABLE_FROM: dict[str, frozenset[JobState]] = {
    source: move.sources for source, move in ADOPTION.items()
}


def adopt(
    rt: Runtime,
    job_id: str,
    task_id: str,
    *,
    source: Source = "callback",
    retries: int = 0,
) -> Step:
    """Re-fetch ``task_id`` and make it the job's task; returns what comes next."""
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
    try:
        task = rt.api().get_task(task_id)
    except NotFoundError:
        log.warning("adopt_task_not_found", job_id=job_id, evolink_task_id=task_id, source=source)
        # Forget a callback's claim the API denies (the reconciler would re-send it).
        rt.store.apply(
            lifecycle.FORGET_DENIED_TASK.only_from(*allowed),
            job_id,
            expect={"callback_task_id": task_id},
        )
        _tell_the_person(rt, job_id, task_id, "the API does not know this task", source)
        return Done("task_not_found")
    except EvolinkError as exc:
        if action_for(exc) is not Action.RETRY:
            log.warning("adopt_failed", job_id=job_id, evolink_task_id=task_id, error=exc.message)
            _tell_the_person(rt, job_id, task_id, exc.message, source)
            return Done("adopt_failed")
        return retry(rt, RetryCause.ADOPT_FAILED, exc, attempt=retries, wait_s=exc.retry_after_s)

    new_task = record.evolink_task_id != task_id
    previous = list(record.previous_task_ids)
    if record.evolink_task_id and new_task:
        previous.append(record.evolink_task_id)
    credits = (task.usage.credits_reserved or 0.0) if new_task else 0.0
    token = new_token()
    moved, applied = rt.store.apply(
        adoption,
        job_id,
        incr={"paid_creates": 1 if new_task else 0, "credits_paid": credits},
        credits_reserved=0.0,  # its create's hold is settled by this charge
        evolink_task_id=task.id,
        previous_task_ids=previous,
        estimated_time_s=task.estimated_time_s or 0.0,
        deadline_at=now() + rt.settings.poll_deadline_s,
        poll_token=token,
        next_poll_at=now(),
        progress=task.progress,
        create_outcome_unknown=False,
        create_sent=False,
    )
    if not applied or moved is None:
        return Done("lost_race")
    if credits:
        metrics.credits_reserved(credits)
        rt.credits().settle(
            job_id, credits, producer=record.producer, held_on=record.credits_held_on
        )
    log.warning(
        "task_adopted",
        job_id=job_id,
        evolink_task_id=task.id,
        source=source,
        from_state=record.state.value,
        status=task.status.value,
    )
    from workers.stages.poll import handle_task_state

    return replace(handle_task_state(rt, moved, task, token), label="adopted")


def _tell_the_person(rt: Runtime, job_id: str, task_id: str, why: str, source: Source) -> None:
    """A person's ``nbq adopt`` waits for the worker's verdict: put it on the record."""
    if source == "person":
        rt.store.apply(
            lifecycle.NOTE_ADOPT_REFUSED,
            job_id,
            waiting_reason=f"adopt of task {task_id} refused: {why}"[:300],
        )


def unknown_outcome_error(detail: str, *, waited_s: float | None = None) -> JobError:
    """The failure a person reads when a create's outcome stayed unknown."""
    why = (
        f"no callback for its task arrived within {waited_s:.0f}s"
        if waited_s is not None
        else "no answer said whether it made a task"
    )
    return JobError(
        code="outcome_unknown",
        message=(
            f"the create may have reached the API and been charged ({detail}); {why}, and it "
            "was not sent again because a resend could pay twice (the vendor does not "
            "document Idempotency-Key support). Find the task in the Evolink dashboard and "
            "attach it: `nbq adopt JOB_ID TASK_ID`; or send a new create: "
            "`nbq retry JOB_ID --yes` (may pay twice)"
        ),
    )
