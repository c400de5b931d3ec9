"""What stages share: building a Retry step, job failure, tokens and the clock."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.failures import record_failure
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.lifecycle import Transition
from nanobanana_queue.workers.jobs.record import JobError, JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.policy.retry import RETRY_RULES, RetryCause, budget, delay_s
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.steps import Message, Retry

log = get_logger("nbq.stages")


def retry(
    rt: Runtime,
    cause: RetryCause,
    error: BaseException,
    *,
    attempt: int,
    wait_s: float | None = None,
    on_exhausted: JobError | None = None,
    again: Message | None = None,
) -> Retry:
    """The ``Retry`` step for ``cause``: budget, delay and fail-from come from the one
    retry table (``workers.policy.retry``)."""
    rule = RETRY_RULES[cause]
    return Retry(
        cause=cause,
        error=error,
        after_s=delay_s(rule, attempt=attempt, backoff=rt.backoff, rng=rt.rng, wait_s=wait_s),
        budget=budget(rule, transient_retries=rt.settings.max_transient_retries),
        spends_budget=rule.spends_budget,
        on_exhausted=on_exhausted,
        fail_from=rule.fail_from,
        again=again,
    )


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def fail_job(
    rt: Runtime,
    job_id: str,
    error: JobError,
    *,
    via: Transition = lifecycle.FAIL,
    expect: Mapping[str, str | None] | None = None,
    **fields: Any,
) -> JobRecord | None:
    """Move a job to ``failed`` with a reason a person understands (once).

    ``via`` is the failing transition (``FAIL`` from any active state, ``FAIL_POLL`` for
    the live poll chain, or one narrowed with ``only_from``); ``expect`` its guards;
    ``fields`` what else it takes (``lifecycle``: e.g. an adopted failed task's id).
    Signed result links are dropped with it (they are only needed to download).
    """
    if via.target is not JobState.FAILED:
        raise ValueError(f"fail_job needs a transition to failed, not {via.name}")
    # A create whose outcome is unknown may have been charged: its transition keeps the
    # hold on the day's budget (never under-count); every other one frees it.
    keeps_hold = "credits_reserved" not in dict(via.fixed)
    record, applied = rt.store.apply(via, job_id, expect=expect, error=error, **fields)
    if applied and record is not None:
        metrics.job_failed(error.code)
        record_failure(job_id, error)  # the task ends FAILURE with this reason's class
        if not keeps_hold and (record.credits_held_on or record.credits_paid):
            # Frees the hold; counts what the job paid (once a day) as paid by failed jobs.
            rt.credits().ended(
                job_id,
                JobState.FAILED.value,
                paid=record.credits_paid,
                producer=record.producer,
                held_on=record.credits_held_on,
            )
        if record.polls:
            metrics.polls_per_job(record.polls)
        log.warning(
            "job_failed",
            job_id=job_id,
            evolink_task_id=record.evolink_task_id,
            code=error.code,
            error_message=error.message,
            retryable=error.retryable,
        )
    return record if applied else None


def error_from(exc: BaseException, *, code: str | None = None, retryable: bool = False) -> JobError:
    reason = code or getattr(exc, "reason", None) or type(exc).__name__
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return JobError(code=str(reason), message=str(message)[:1000], retryable=retryable)


def now() -> float:
    return time.time()
