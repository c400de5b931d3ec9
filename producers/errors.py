"""Errors raised to producers.

::

    ProducerError
    ├── InvalidRequestError     the request breaks a rule; ``field`` names it; nothing enqueued
    ├── CreditBudgetExceededError  the daily credit budget would be exceeded; nothing enqueued
    ├── JobIdConflictError      the job id is taken by a different request; nothing enqueued
    ├── JobNotFoundError        no such job (or past retention)
    ├── JobNotCancellableError  the job already ended
    ├── JobNotStoredError       results asked for a job that is not stored (yet)
    ├── WaitTimeoutError        ``wait`` gave up; the job goes on
    ├── EnqueueUncertainError   Redis failed mid-enqueue; ``job_id`` may or may not be queued
    └── JobActionRefusedError   ``retry`` / ``adopt`` would be wrong for this job; unchanged
        └── MayPayTwiceError    ``retry`` may pay for nothing (unknown outcome, permanent): confirm
"""

from __future__ import annotations

# Raised by the job store, cancel, the manual actions and the worker too (a raw message's
# invalid request or a budget refusal fails its job with the same class): defined once,
# in the one error module, and re-exported here under the names producers import.
from nanobanana_queue.workers.errors import (
    CreditBudgetExceededError,
    InvalidRequestError,
    JobActionRefusedError,
    JobNotCancellableError,
    JobNotFoundError,
    MayPayTwiceError,
    ProducerError,
)

__all__ = [
    "CreditBudgetExceededError",
    "EnqueueUncertainError",
    "InvalidRequestError",
    "JobActionRefusedError",
    "JobIdConflictError",
    "JobNotCancellableError",
    "JobNotFoundError",
    "JobNotStoredError",
    "MayPayTwiceError",
    "ProducerError",
    "WaitTimeoutError",
]


class JobIdConflictError(ProducerError):
    """A caller-chosen job id already names a job with a different request.

    The id is an idempotency key for one request: the same request again returns the
    same job; a different one is refused (nothing enqueued, the existing job unchanged)
    rather than silently answered with the old job. Use a new id for a new request.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job id {job_id!r} is already used by a different request; nothing was "
            "enqueued (send the same request to get that job, or use a new job id)"
        )
        self.job_id = job_id


class JobNotStoredError(ProducerError):
    pass


class WaitTimeoutError(ProducerError, TimeoutError):
    pass


class EnqueueUncertainError(ProducerError):
    """Redis failed half way through an enqueue: the job may or may not exist.

    Enqueue again with ``job_id=error.job_id``: the id is an idempotency key, so this
    records and sends the job if it is missing and does nothing twice if it is not.
    """

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(
            f"enqueue of job {job_id} interrupted ({reason}); it may or may not be queued: "
            f"enqueue again with job_id={job_id!r} (idempotent) to be sure"
        )
        self.job_id = job_id
