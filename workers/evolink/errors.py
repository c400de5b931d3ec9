"""Errors of the Evolink API client, one class per thing a caller does differently.

::

    EvolinkError                      base; ``retryable`` says whether trying again can help
    ├── RequestRejectedError          400 / 413: the request is wrong (fail the job)
    │   └── RequestTooLargeError      413
    ├── UnauthorizedError             401: key missing or invalid (stop, alert)
    ├── QuotaExceededError            402: out of credits (pause submissions, keep jobs)
    ├── ModelAccessDeniedError        403: key cannot use this model
    ├── NotFoundError                 404: unknown task or expired result link
    ├── RateLimitedError              429: slow down; ``retry_after_s`` when the API says
    ├── ServerError                   5xx: transient server trouble
    ├── MalformedResponseError        a 2xx body that is not the expected JSON
    ├── TransportError                no HTTP answer at all
    │   ├── ApiTimeoutError           connect/read timeout
    │   └── ApiConnectionError        refused, reset or dropped connection
    └── TaskFailedError               the task itself ended ``failed`` (code from the API)

Every message is safe to log: none carries the API key or a signed URL's query string.
"""

from __future__ import annotations

from typing import ClassVar

#: Task error codes worth a fresh API task (CONTRACT.md section 2).
RETRYABLE_TASK_CODES = frozenset(
    {
        "generation_timeout",
        "quota_exceeded",
        "resource_exhausted",
        "generation_failed_no_content",
        "service_error",
        "service_unavailable",
        "upstream_error",
        "unknown_error",
    }
)
#: Task error codes that will fail again however often they are retried.
PERMANENT_TASK_CODES = frozenset(
    {
        "content_policy_violation",
        "invalid_parameters",
        "image_dimension_mismatch",
        "image_processing_error",
        "request_cancelled",
        "resource_not_found",
        "model_unavailable",
    }
)
#: 402 codes meaning a per-key daily limit that resets at midnight (UTC).
DAILY_QUOTA_CODES = frozenset({"token_daily_quota_exceeded"})


class EvolinkError(Exception):
    """Base of every client error."""

    retryable: ClassVar[bool] = False
    #: Short machine-readable reason recorded on the job.
    reason: ClassVar[str] = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[object, ...]:
        # Keep keyword arguments across pickling (Celery result backends, billiard).
        return (
            _rebuild,
            (
                type(self),
                self.message,
                self.status_code,
                self.code,
                self.retry_after_s,
                self.__dict__,
            ),
        )


def _rebuild(
    cls: type[EvolinkError],
    message: str,
    status_code: int | None,
    code: str | None,
    retry_after_s: float | None,
    state: dict[str, object],
) -> EvolinkError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class RequestRejectedError(EvolinkError):
    """400: bad parameters, content policy, size."""

    reason = "invalid_request"


class RequestTooLargeError(RequestRejectedError):
    """413: the body or a reference image is too large."""

    reason = "request_too_large"


class UnauthorizedError(EvolinkError):
    """401: the API key is missing, wrong or expired."""

    reason = "unauthorized"


class QuotaExceededError(EvolinkError):
    """402: no credits left; submissions pause until an operator tops up."""

    reason = "insufficient_quota"

    @property
    def is_daily_limit(self) -> bool:
        return (self.code or "") in DAILY_QUOTA_CODES


class ModelAccessDeniedError(EvolinkError):
    """403: this key may not use the model."""

    reason = "model_access_denied"


class NotFoundError(EvolinkError):
    """404: unknown task id, or a result link that no longer exists."""

    reason = "not_found"


class RateLimitedError(EvolinkError):
    """429: a rate or concurrency limit; wait ``retry_after_s`` if given."""

    retryable = True
    reason = "rate_limited"


class ServerError(EvolinkError):
    """500/502/503 and other 5xx answers."""

    retryable = True
    reason = "server_error"


class MalformedResponseError(EvolinkError):
    """A success status whose body is not the task JSON we expect."""

    retryable = True
    reason = "malformed_response"


class TransportError(EvolinkError):
    """No HTTP answer. For a create, the task may nevertheless exist."""

    retryable = True
    reason = "transport_error"

    def __init__(self, message: str, *, create_may_have_happened: bool = False) -> None:
        super().__init__(message)
        self.create_may_have_happened = create_may_have_happened


class ApiTimeoutError(TransportError):
    """Connect or read timeout."""

    reason = "timeout"


class ApiConnectionError(TransportError):
    """Connection refused, reset or dropped mid-answer."""

    reason = "connection_error"


class TaskFailedError(EvolinkError):
    """The task ended ``failed``; retryable codes deserve a fresh task, others never."""

    reason = "task_failed"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"task failed: {code}: {message}", code=code)

    @property
    def task_code_retryable(self) -> bool:
        return (self.code or "unknown_error") not in PERMANENT_TASK_CODES


STATUS_ERRORS: dict[int, type[EvolinkError]] = {
    400: RequestRejectedError,
    401: UnauthorizedError,
    402: QuotaExceededError,
    403: ModelAccessDeniedError,
    404: NotFoundError,
    413: RequestTooLargeError,
    429: RateLimitedError,
}


def error_for_status(status_code: int) -> type[EvolinkError]:
    """The exception class for an HTTP error status."""
    if status_code in STATUS_ERRORS:
        return STATUS_ERRORS[status_code]
    if status_code >= 500:
        return ServerError
    return RequestRejectedError if 400 <= status_code < 500 else EvolinkError
