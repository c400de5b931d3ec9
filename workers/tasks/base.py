"""The task base: turns a stage's RetryLater into a Celery retry and ends exhausted jobs.

A run that moved its job to ``failed`` ends in Celery FAILURE with the reason's
exception class (``workers.failures``): Flower's Failed count and filter show failed
jobs, once each (only the run whose transition won raises; a duplicate finds the job
already failed and succeeds quietly). ``throws`` marks these as expected: the worker logs
them at INFO without a traceback, and no autoretry or redelivery follows (poll/download
ack late, and Celery acks a task that raised: task_acks_on_failure_or_timeout).
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Task

from workers import failures, metrics
from workers.app import app
from workers.contract import TASK_ADOPT, TASK_DOWNLOAD, TASK_POLL, TASK_SUBMIT
from workers.jobs.lifecycle import FAIL
from workers.runtime import get_runtime
from workers.stages.common import RetryLater, fail_job, log

#: The job store (not the API) failing: retried without bound, never acked away.
STORE_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


def capped_countdown(countdown_s: float | None) -> float | None:
    """No message of ours waits longer than NBQ_MAX_COUNTDOWN_S (a Retry-After of hours
    included): the consumer guard refuses ETAs beyond it, and waking early is harmless
    (the breaker, limiter and poll schedule re-check and wait again)."""
    if not countdown_s:
        return None
    return min(countdown_s, get_runtime().settings.max_countdown_s)


class CeleryScheduler:
    """Starts the next stage by name, so any worker pool may pick it up."""

    def submit(self, job_id: str, *, countdown_s: float = 0.0) -> None:
        app.send_task(
            TASK_SUBMIT, kwargs={"job_id": job_id}, countdown=capped_countdown(countdown_s)
        )

    def poll(
        self, job_id: str, token: str, *, countdown_s: float, evolink_task_id: str | None = None
    ) -> None:
        kwargs: dict[str, Any] = {"job_id": job_id, "token": token}
        if evolink_task_id:
            kwargs["evolink_task_id"] = evolink_task_id  # lets a vanished job be rescued
        app.send_task(TASK_POLL, kwargs=kwargs, countdown=capped_countdown(countdown_s))

    def download(self, job_id: str, *, evolink_task_id: str | None = None) -> None:
        kwargs: dict[str, Any] = {"job_id": job_id}
        if evolink_task_id:
            kwargs["evolink_task_id"] = evolink_task_id
        app.send_task(TASK_DOWNLOAD, kwargs=kwargs)

    def adopt(self, job_id: str, task_id: str, *, source: str = "callback") -> None:
        app.send_task(TASK_ADOPT, kwargs={"job_id": job_id, "task_id": task_id, "source": source})


SCHEDULER = CeleryScheduler()


class StageTask(Task):  # type: ignore[misc]
    """Runs a stage; a RetryLater becomes ``self.retry`` (visible in Flower)."""

    abstract = True
    max_retries = None
    throws = (failures.JobFailed,)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with failures.recording() as failed:
            result = super().__call__(*args, **kwargs)
        if failed:
            job_id, error = failed[0]
            raise failures.failure_for(job_id, error)
        return result

    def run_stage(self, func: Any, *args: Any, **kwargs: Any) -> str:
        with metrics.batched():  # one metrics round trip per task
            try:
                get_runtime().epoch().maybe_check()  # one GET per NBQ_STORE_EPOCH_CHECK_S
                return self._run_stage(func, *args, **kwargs)
            except STORE_UNREACHABLE as exc:
                raise self._retry_store_outage(exc) from None

    def _retry_store_outage(self, exc: Exception) -> Exception:
        """The job store did not answer: send this same message again later.

        Failing the task would ack it, and the message may be all that is left of a paid
        job (its task id) if the store comes back empty; the broker may well be up.
        """
        rt = get_runtime()
        delay_s = rt.backoff.delay_s(self.request.retries, rt.rng)
        log.warning(
            "store_unreachable_retry",
            task=self.name,
            job_id=(self.request.kwargs or {}).get("job_id"),
            error=type(exc).__name__,
            retry_in_s=round(delay_s, 3),
        )
        return self.retry(exc=exc, countdown=delay_s, max_retries=None)  # type: ignore[no-any-return]

    def _run_stage(self, func: Any, *args: Any, **kwargs: Any) -> str:
        try:
            return str(func(*args, retries=self.request.retries, **kwargs))
        except RetryLater as signal:
            limit = signal.max_retries
            if limit is not None and self.request.retries >= limit:
                if signal.on_exhausted is None:
                    raise signal.cause from None
                failed = fail_job(
                    get_runtime(),
                    str(kwargs["job_id"]),
                    signal.on_exhausted,
                    via=FAIL.only_from(*signal.fail_from) if signal.fail_from else FAIL,
                )
                # Failed here: __call__ raises the reason's class. Moved on by another
                # stage meanwhile: nothing failed, the task ends quietly.
                return "failed_exhausted" if failed is not None else "exhausted_stale"
            if limit is None:
                # An unbounded wait (quota breaker) must not spend the transient-retry
                # budget: the re-sent message counts from 0 again (retry() adds 1).
                self.request.retries = -1
            raise self.retry(
                exc=signal.cause,
                countdown=min(signal.countdown_s, get_runtime().settings.max_countdown_s),
                kwargs=signal.kwargs,
                max_retries=None,
            ) from None
