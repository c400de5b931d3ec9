"""Cancel: a queued job is never submitted; a job in flight stops and ends cancelled.

Every stage moves the job with a state-checked transition, so once a job is
``cancelled`` no stage can move it again: a pending submit finds it terminal, a poll
chain ends at its next hop, a download's final transition fails.
"""

from __future__ import annotations

from nanobanana_queue.workers.errors import JobNotCancellableError
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.jobs.store import JobNotFoundError, JobStore
from nanobanana_queue.workers.resilience.fairshare import FairShare


def cancel_job(store: JobStore, job_id: str) -> JobRecord:
    """Cancel ``job_id``; a cancelled job keeps no ``waiting_reason`` (it waits for nothing)
    and no hold on the day's budget (``lifecycle.CANCEL`` frees it)."""
    record, applied = store.apply(lifecycle.CANCEL, job_id)
    if record is None:
        raise JobNotFoundError(job_id)
    if not applied:
        if record.state is JobState.CANCELLED:
            return record
        raise JobNotCancellableError(
            f"job {job_id} is already {record.state.value}; "
            "only queued or in-flight jobs can be cancelled"
        )
    # Off its producer's fair-share list (a queued job) or in-flight set (workers/
    # resilience/fairshare.py): a cancelled job is neither taken nor charged later.
    FairShare(store.redis, prefix=store.prefix).left(job_id, record.producer)
    if record.credits_held_on or record.credits_paid:
        # Frees the job's hold on the day's budget; counts what it paid as cancelled.
        from nanobanana_queue.workers.resilience.credits import CreditLedger

        CreditLedger(store.redis, prefix=store.prefix).ended(
            job_id,
            JobState.CANCELLED.value,
            paid=record.credits_paid,
            producer=record.producer,
            held_on=record.credits_held_on,
        )
    return record
