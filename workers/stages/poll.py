"""Poll: ask the API once, then re-schedule, chain the download, recreate or fail.

"Still generating" is not an error: the next poll is a plain countdown message, so it
never shows as a retry or failure in Flower. Each poll carries a token; claiming the job
swaps it atomically, so a duplicated or redelivered poll finds a stale token and stops,
and there is never more than one live poll chain per job.
"""

from __future__ import annotations

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.errors import (
    BACKOFF,
    ApiUnavailableError,
    DeadlineExceededError,
    EvolinkError,
    NotFoundError,
    RateLimitedError,
    TaskFailedError,
    TaskNotFoundError,
    UnauthorizedError,
)
from nanobanana_queue.workers.evolink.models import Task, TaskStatus
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.leases import claim_owner
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.common import fail, log, new_token, now
from nanobanana_queue.workers.stages.steps import Done, Download, Poll, Retry, Step, Submit


def poll(
    rt: Runtime,
    job_id: str,
    token: str = "",  # nosec B107 - poll token
    *,
    retries: int = 0,
    evolink_task_id: str | None = None,
) -> Step:
    """Run the poll stage once; returns what comes next (its label names the outcome).

    ``evolink_task_id`` (carried by the message) lets a poll whose job record vanished
    rescue the paid task (workers/stages/rescue.py).
    """
    # Claim first (one round trip): only the poll carrying the current token goes on.
    next_token = new_token()
    record, won = rt.store.apply(
        lifecycle.CLAIM_POLL,
        job_id,
        expect={"poll_token": token or None},
        poll_token=next_token,
        claimed_by=claim_owner(),  # its lease lapsing re-drives the chain (leases.py)
        # Under way now: the reconciler reads this, not the index's time (which the claim
        # leaves as it was: the answer's write follows within one query).
        next_poll_at=now(),
    )
    if record is None:
        from nanobanana_queue.workers.stages.rescue import report_lost, rescue

        if evolink_task_id:
            return rescue(rt, job_id, evolink_task_id, via="poll")
        return report_lost(rt, job_id, stage="poll")
    if record.is_terminal:
        return Done("gone")
    if record.state is not JobState.GENERATING:
        return Done(f"stale_{record.state.value}")
    if not won:
        return Done("stale_token")
    task_id = record.evolink_task_id
    assert task_id is not None  # set by the same transition that entered generating

    if record.deadline_at is not None and now() > record.deadline_at:
        return fail(
            rt,
            job_id,
            DeadlineExceededError(
                f"task {task_id} not finished within {rt.settings.poll_deadline_s:.0f}s; "
                "the Evolink task id is kept so the job can be resumed"
            ),
            via=lifecycle.FAIL_POLL,
            expect={"poll_token": next_token},
            label="deadline_exceeded",
        )

    wait_s = rt.limiter.acquire("query")
    if wait_s > 0:
        return _schedule_next(rt, record, next_token, wait_s)

    try:
        task = rt.api().get_task(task_id)
    except EvolinkError as exc:
        return _query_failed(rt, record, next_token, exc, retries=retries)
    return handle_task_state(rt, record, task, next_token)


def handle_task_state(rt: Runtime, record: JobRecord, task: Task, next_token: str) -> Step:
    """Act on a fresh task object (from a poll, or a re-fetch after a callback)."""
    job_id = record.job_id
    if task.status is TaskStatus.COMPLETED:
        urls = task.result_urls
        if not urls:
            return _task_failed(
                rt,
                record,
                TaskFailedError.of("generation_failed_no_content", "completed without any result"),
                next_token,
            )
        moved, applied = rt.store.apply(
            lifecycle.COMPLETED,
            job_id,
            expect={"poll_token": next_token},  # only the live poll chain's news counts
            result_urls=urls,
        )
        if not applied or moved is None:
            return Done("stale_on_complete")
        rt.store.tell_progress(record, moved)  # job.progress (opt-in): 100, downloading
        metrics.polls_per_job(moved.polls)
        log.info(
            "task_completed",
            job_id=job_id,
            evolink_task_id=task.id,
            polls=moved.polls,
            results=len(urls),
        )
        return Download(job_id, evolink_task_id=task.id, label="completed")
    if task.status is TaskStatus.FAILED:
        error = task.error
        return _task_failed(
            rt,
            record,
            TaskFailedError.of(error.code if error else None, error.message if error else ""),
            next_token,
        )
    if task.status is TaskStatus.CANCELLED:
        gone, applied = rt.store.apply(
            lifecycle.CANCELLED_UPSTREAM, job_id, expect={"poll_token": next_token}
        )
        if applied and gone is not None and gone.credits_paid:
            rt.credits().ended(  # what it paid counts as paid by cancelled jobs
                job_id,
                JobState.CANCELLED.value,
                paid=gone.credits_paid,
                producer=gone.producer,
                held_on=gone.credits_held_on,
            )
        return Done("cancelled_upstream")

    elapsed_s = now() - (record.state_times.get(JobState.GENERATING.value) or now())
    countdown_s = rt.schedule.next_countdown_s(
        estimated_time_s=record.estimated_time_s,
        elapsed_s=elapsed_s,
        progress=task.progress,
        rng=rt.rng,
    )
    polled, still_ours = rt.store.apply(
        lifecycle.POLL_PROGRESS,
        job_id,
        expect={"poll_token": next_token},
        progress=task.progress,
        next_poll_at=now() + countdown_s,
    )
    if not still_ours:
        return Done("stale_token")  # a newer poll (a callback's) took over the chain
    if polled is not None:
        rt.store.tell_progress(record, polled)  # job.progress (opt-in), once per new value
    log.info(
        "still_generating",
        job_id=job_id,
        evolink_task_id=task.id,
        status=task.status.value,
        progress=task.progress,
        next_poll_in_s=round(countdown_s, 3),
    )
    return Poll(
        job_id, next_token, after_s=countdown_s, evolink_task_id=task.id, label="rescheduled"
    )


def _schedule_next(rt: Runtime, record: JobRecord, token: str, countdown_s: float) -> Step:
    """Poll again later (the query limiter said wait)."""
    rt.store.apply(lifecycle.POLL_LATER, record.job_id, next_poll_at=now() + countdown_s)
    return Poll(
        record.job_id,
        token,
        after_s=countdown_s,
        evolink_task_id=record.evolink_task_id,
        label="deferred_rate_limit",
    )


def _task_failed(rt: Runtime, record: JobRecord, exc: TaskFailedError, token: str) -> Step:
    job_id = record.job_id
    code = exc.reason
    if (
        exc.recreates
        and record.create_seq < rt.settings.max_create_attempts
        and record.recovered_at is None  # a rescued job has no request to create again
    ):
        previous = [*record.previous_task_ids, record.evolink_task_id or ""]
        _, applied = rt.store.apply(
            lifecycle.RECREATE,
            job_id,
            expect={"poll_token": token},  # one recreate per failed task, never two
            previous_task_ids=previous,  # and a new create round (create_seq + 1)
            waiting_reason=f"recreate after {code}",
            error=exc.job_error(),
        )
        if applied:
            log.warning(
                "task_failed_recreating",
                job_id=job_id,
                evolink_task_id=record.evolink_task_id,
                code=code,
                create_seq=record.create_seq + 1,
            )
            return Submit(job_id, label="recreate")
        return Done("stale_on_fail")
    _, ours = rt.store.apply(lifecycle.POLL_COUNTED, job_id, expect={"poll_token": token})
    if not ours:
        return Done("stale_on_fail")
    return fail(rt, job_id, exc, via=lifecycle.FAIL_POLL, expect={"poll_token": token})


def _query_failed(
    rt: Runtime, record: JobRecord, token: str, exc: EvolinkError, *, retries: int
) -> Step:
    job_id = record.job_id
    # A query retries any API trouble that has a retry rule (a paused key or quota too)
    # with backoff; the rest fails the job. A 404 means the API forgot the task.
    retried = exc.retry_rule is not None
    log.warning(
        "query_failed",
        job_id=job_id,
        evolink_task_id=record.evolink_task_id,
        error=type(exc).__name__,
        status=exc.status_code,
        action="retry" if retried else "fail",
    )
    if not retried:
        if isinstance(exc, NotFoundError) and not isinstance(exc, TaskNotFoundError):
            exc = TaskNotFoundError(exc.message, status_code=exc.status_code, code=exc.code)
        return fail(rt, job_id, exc, via=lifecycle.FAIL_POLL, expect={"poll_token": token})
    if isinstance(exc, UnauthorizedError):
        rt.breaker.trip(kind="unauthorized", code=exc.code, message=exc.message)
    if isinstance(exc, RateLimitedError):
        rt.limiter.penalise("query", exc.retry_after_s)
    step = Retry.of(
        rt,
        exc,
        attempt=retries,
        rule=BACKOFF,
        fail_from=(JobState.GENERATING,),
        again=Poll(job_id, token, evolink_task_id=record.evolink_task_id),
        exhausted=ApiUnavailableError(
            f"task query kept failing ({exc.message}); the Evolink task id is "
            "kept so the job can be resumed"
        ),
    )
    rt.store.apply(lifecycle.POLL_LATER, job_id, next_poll_at=now() + step.after_s)
    return step
