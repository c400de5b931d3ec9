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


class CeleryScheduler:
    """Starts the next stage by name, so any worker pool may pick it up."""

    def submit(self, job_id: str, *, countdown_s: float = 0.0) -> None:
        app.send_task(TASK_SUBMIT, kwargs={"job_id": job_id}, countdown=countdown_s or None)

    def poll(
        self, job_id: str, token: str, *, countdown_s: float, evolink_task_id: str | None = None
    ) -> None:
        kwargs: dict[str, Any] = {"job_id": job_id, "token": token}
        if evolink_task_id:
            kwargs["evolink_task_id"] = evolink_task_id  # lets a vanished job be rescued
        app.send_task(TASK_POLL, kwargs=kwargs, countdown=countdown_s or None)

    def download(self, job_id: str, *, evolink_task_id: str | None = None) -> None:
        kwargs: dict[str, Any] = {"job_id": job_id}
        if evolink_task_id:
            kwargs["evolink_task_id"] = evolink_task_id
        app.send_task(TASK_DOWNLOAD, kwargs=kwargs)


SCHEDULER = CeleryScheduler()


class StageTask(Task):  # type: ignore[misc]
    """Runs a stage; a RetryLater becomes ``self.retry`` (visible in Flower)."""

    abstract = True
    max_retries = None

    def run_stage(self, func: Any, *args: Any, **kwargs: Any) -> str:
        with metrics.batched():  # one metrics round trip per task
            get_runtime().epoch().maybe_check()  # one GET per NBQ_STORE_EPOCH_CHECK_S
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
                countdown=signal.countdown_s,
                kwargs=signal.kwargs,
                max_retries=None,
            ) from None
