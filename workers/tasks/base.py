"""The task base: executes the step a stage returns, and ends exhausted jobs.

A message step goes to the dispatcher (``workers.dispatch``); a ``Retry`` becomes
Celery's ``self.retry`` with its error, budget and delay (the error class's retry rule,
``workers/errors.py``); ``Done`` ends the run with its label.

A ``Fail`` step (the run that moved its job to ``failed``) ends in Celery FAILURE by
raising the step's own error, an instance of the reason's class: Flower's Failed count
and filter show failed jobs, once each (only the run whose transition won gets a
``Fail``; a duplicate finds the job already failed and succeeds quietly). ``throws``
marks these as expected: the worker logs them at INFO without a traceback, and no
autoretry or redelivery follows (poll/download ack late, and Celery acks a task that
raised: task_acks_on_failure_or_timeout).
"""

from __future__ import annotations

from typing import Any

import redis
import structlog
from celery import Task

from nanobanana_queue.workers import metrics, tracing
from nanobanana_queue.workers.app import app
from nanobanana_queue.workers.dispatch import Dispatcher
from nanobanana_queue.workers.errors import NbqError, StoreUnreachableError
from nanobanana_queue.workers.jobs.lifecycle import FAIL
from nanobanana_queue.workers.runtime import get_runtime
from nanobanana_queue.workers.stages.common import fail_job, log
from nanobanana_queue.workers.stages.steps import Done, Fail, Retry, Step

#: The job store (not the API) failing: retried without bound, never acked away.
STORE_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


def dispatcher() -> Dispatcher:
    """The worker's dispatcher (its app, its runtime's NBQ_MAX_COUNTDOWN_S)."""
    return Dispatcher.for_settings(app, get_runtime().settings)


class StageTask(Task):  # type: ignore[misc]
    """Runs a stage and executes the step it returns (a Retry is ``self.retry``, a Fail
    raises its error)."""

    abstract = True
    max_retries = None
    throws = (NbqError,)

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
        step = Retry.of(
            get_runtime(),
            StoreUnreachableError(f"job store unreachable: {type(exc).__name__}: {exc}"),
            attempt=self.request.retries,
        )
        log.warning(
            "store_unreachable_retry",
            task=self.name,
            job_id=(self.request.kwargs or {}).get("job_id"),
            error=type(exc).__name__,
            retry_in_s=round(step.after_s, 3),
        )
        return dispatcher().retry(self, step)

    def _run_stage(self, func: Any, *args: Any, **kwargs: Any) -> str:
        job_id = str(kwargs.get("job_id", ""))
        task_id = kwargs.get("evolink_task_id") or kwargs.get("task_id")
        tracing.annotate(job_id=job_id, evolink_task_id=task_id)
        # Every line the stage logs names the job, this Celery task and the Evolink task.
        with structlog.contextvars.bound_contextvars(
            job_id=job_id, celery_task_id=self.request.id, evolink_task_id=task_id
        ):
            step: Step = func(*args, retries=self.request.retries, **kwargs)
            tracing.annotate(evolink_task_id=getattr(step, "evolink_task_id", None))
            return self.execute(step, job_id=job_id)

    def execute(self, step: Step, *, job_id: str) -> str:
        """Carry out ``step``; returns the run's label (the task result)."""
        if isinstance(step, Fail):
            raise step.error
        if isinstance(step, Done):
            return step.label
        if isinstance(step, Retry):
            return self._retry(step, job_id)
        dispatcher().send(step)
        return step.label

    def _retry(self, step: Retry, job_id: str) -> str:
        if step.budget is not None and self.request.retries >= step.budget:
            if step.exhausted is None:
                raise step.error from None
            failed = fail_job(
                get_runtime(),
                job_id,
                step.exhausted,
                via=FAIL.only_from(*step.fail_from) if step.fail_from else FAIL,
            )
            if failed is None:
                return "exhausted_stale"  # moved on by another stage: nothing failed
            raise step.exhausted from None
        raise dispatcher().retry(self, step) from None
