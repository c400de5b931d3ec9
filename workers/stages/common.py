"""What stages share: the scheduler seam, the retry signal and job failure."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from workers import metrics
from workers.failures import record_failure
from workers.jobs import lifecycle
from workers.jobs.lifecycle import Transition
from workers.jobs.record import JobError, JobRecord
from workers.jobs.state import JobState
from workers.logs import get_logger
from workers.runtime import Runtime

log = get_logger("nbq.stages")


class Scheduler(Protocol):
    """How a stage starts the next one (Celery in production, a list in tests)."""

    def submit(self, job_id: str, *, countdown_s: float = 0.0) -> None: ...

    def poll(
        self, job_id: str, token: str, *, countdown_s: float, evolink_task_id: str | None = None
    ) -> None: ...

    def download(self, job_id: str, *, evolink_task_id: str | None = None) -> None: ...

    def adopt(self, job_id: str, task_id: str, *, source: str = "callback") -> None: ...


class RetryLater(Exception):  # noqa: N818 - a signal, not an error
    """Ask the task wrapper to retry this same task after ``countdown_s``.

    It becomes Celery's ``self.retry(exc=cause)``, so the cause (e.g. a quota error)
    shows in Flower as a retry with its own exception class. ``kwargs`` replaces the
    task's keyword arguments (a poll retry carries its new token). ``max_retries=None``
    retries without bound (quota waits: jobs stay queued, never failed).
    """

    def __init__(
        self,
        cause: BaseException,
        countdown_s: float,
        *,
        max_retries: int | None,
        kwargs: dict[str, Any] | None = None,
        on_exhausted: JobError | None = None,
        fail_from: tuple[JobState, ...] | None = None,
    ) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.countdown_s = countdown_s
        self.max_retries = max_retries
        self.kwargs = kwargs
        self.on_exhausted = on_exhausted
        #: States from which exhaustion may fail the job (the stage's own); another stage
        #: that has since moved the job on is never failed from under it.
        self.fail_from = fail_from


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
    ``fields`` are written in the same move (e.g. ``create_sent=False``). Signed result
    links are dropped with it (they are only needed to download).
    """
    if via.target is not JobState.FAILED:
        raise ValueError(f"fail_job needs a transition to failed, not {via.name}")
    record, applied = rt.store.apply(via, job_id, expect=expect, error=error, **fields)
    if applied and record is not None:
        metrics.job_failed(error.code)
        record_failure(job_id, error)  # the task ends FAILURE with this reason's class
        if record.credits_reserved:
            from workers.resilience.credits import CreditLedger

            CreditLedger(rt.redis, prefix=rt.settings.key_prefix).record_ended(
                JobState.FAILED.value, record.credits_reserved
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
