"""What stages share: job failure, tokens and the clock."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.errors import NbqError
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.lifecycle import Transition
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.steps import Done, Fail

log = get_logger("nbq.stages")


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def fail(
    rt: Runtime,
    job_id: str,
    error: NbqError,
    *,
    via: Transition = lifecycle.FAIL,
    expect: Mapping[str, str | None] | None = None,
    label: str = "failed",
    **fields: Any,
) -> Fail | Done:
    """Fail the job with ``error`` and return the step that says so: ``Fail(error)`` for
    the run whose transition won (its task raises ``error``), ``Done`` for any other."""
    if fail_job(rt, job_id, error, via=via, expect=expect, **fields) is None:
        return Done("failed_elsewhere")
    return Fail(error, label=label)


def fail_job(
    rt: Runtime,
    job_id: str,
    failure: NbqError,
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
    error = failure.job_error()
    if via.target is not JobState.FAILED:
        raise ValueError(f"fail_job needs a transition to failed, not {via.name}")
    # A create whose outcome is unknown may have been charged: its transition keeps the
    # hold on the day's budget (never under-count); every other one frees it.
    keeps_hold = "credits_reserved" not in dict(via.fixed)
    record, applied = rt.store.apply(via, job_id, expect=expect, error=error, **fields)
    if applied and record is not None:
        rt.fair().left(job_id, record.producer)  # off its fair-share list, if still on it
        metrics.job_failed(error.code)
        failure.failed_job(job_id, error)  # what Flower shows when the task raises it
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


def now() -> float:
    return time.time()
