"""The error policy: every API status and task error code mapped to one action.

This table is the single source of truth; ``docs/failure-handling.md`` reproduces it.
"""

from __future__ import annotations

from enum import StrEnum

from nanobanana_queue.workers.errors import PipelineError
from nanobanana_queue.workers.evolink.errors import (
    PERMANENT_TASK_CODES,
    RETRYABLE_TASK_CODES,
    EvolinkError,
    MalformedResponseError,
    QuotaExceededError,
    TaskFailedError,
    TransportError,
    UnauthorizedError,
)


class Action(StrEnum):
    FAIL = "fail"  # fail the job with its reason; retrying cannot help
    RETRY = "retry"  # same call again after jittered backoff (honouring Retry-After)
    RECREATE = "recreate"  # a fresh API task, a bounded number of times
    PAUSE_SUBMISSIONS = "pause_submissions"  # quota breaker: jobs wait, nothing fails
    STOP_AND_ALERT = "stop_and_alert"  # key rejected: pause everything, page a person
    OUTCOME_UNKNOWN = "outcome_unknown"  # a create that may have happened


#: HTTP status → action (both create and query calls).
STATUS_ACTIONS: dict[int, Action] = {
    400: Action.FAIL,
    401: Action.STOP_AND_ALERT,
    402: Action.PAUSE_SUBMISSIONS,
    403: Action.FAIL,
    404: Action.FAIL,
    413: Action.FAIL,
    429: Action.RETRY,
    500: Action.RETRY,
    502: Action.RETRY,
    503: Action.RETRY,
    504: Action.RETRY,
}

#: Task error code (a task that ended ``failed``) → action.
TASK_CODE_ACTIONS: dict[str, Action] = {
    **{code: Action.FAIL for code in PERMANENT_TASK_CODES},
    **{code: Action.RECREATE for code in RETRYABLE_TASK_CODES},
}


def action_for(error: BaseException, *, during_create: bool = False) -> Action:
    """What to do about ``error`` raised by a stage."""
    if isinstance(error, QuotaExceededError):
        return Action.PAUSE_SUBMISSIONS
    if isinstance(error, UnauthorizedError):
        return Action.STOP_AND_ALERT
    if isinstance(error, TaskFailedError):
        # Unknown codes are retried by a fresh task: the vendor's own clients do the same.
        return TASK_CODE_ACTIONS.get(error.code or "unknown_error", Action.RECREATE)
    if isinstance(error, TransportError):
        if during_create and error.create_may_have_happened:
            return Action.OUTCOME_UNKNOWN
        return Action.RETRY
    if isinstance(error, MalformedResponseError):
        # A 2xx we could not read: the call worked (a create made its task) but the answer
        # was garbled. Resend a create under the same Idempotency-Key; retry a query.
        return Action.OUTCOME_UNKNOWN if during_create else Action.RETRY
    if isinstance(error, EvolinkError):
        if error.status_code is not None:
            if error.status_code in STATUS_ACTIONS:
                return STATUS_ACTIONS[error.status_code]
            return Action.RETRY if error.status_code >= 500 else Action.FAIL
        return Action.RETRY if error.retryable else Action.FAIL
    if isinstance(error, PipelineError):
        return Action.RETRY if error.retryable else Action.FAIL
    return Action.RETRY
