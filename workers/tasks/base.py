"""The task base: turns a stage's RetryLater into a Celery retry and ends exhausted jobs."""

from __future__ import annotations

from typing import Any

from celery import Task

from workers import metrics
from workers.app import app
from workers.contract import TASK_DOWNLOAD, TASK_POLL, TASK_SUBMIT
from workers.jobs.state import ACTIVE_STATES
from workers.runtime import get_runtime
from workers.stages.common import RetryLater, fail_job


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

    def poll(self, job_id: str, token: str, *, countdown_s: float) -> None:
        app.send_task(
            TASK_POLL,
            kwargs={"job_id": job_id, "token": token},
            countdown=capped_countdown(countdown_s),
        )

    def download(self, job_id: str) -> None:
        app.send_task(TASK_DOWNLOAD, kwargs={"job_id": job_id})


SCHEDULER = CeleryScheduler()


class StageTask(Task):  # type: ignore[misc]
    """Runs a stage; a RetryLater becomes ``self.retry`` (visible in Flower)."""

    abstract = True
    max_retries = None

    def run_stage(self, func: Any, *args: Any, **kwargs: Any) -> str:
        with metrics.batched():  # one metrics round trip per task
            return self._run_stage(func, *args, **kwargs)

    def _run_stage(self, func: Any, *args: Any, **kwargs: Any) -> str:
        try:
            return str(func(*args, retries=self.request.retries, **kwargs))
        except RetryLater as signal:
            limit = signal.max_retries
            if limit is not None and self.request.retries >= limit:
                if signal.on_exhausted is not None:
                    fail_job(
                        get_runtime(),
                        str(kwargs["job_id"]),
                        signal.on_exhausted,
                        from_states=signal.fail_from or ACTIVE_STATES,
                    )
                raise signal.cause from None
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
