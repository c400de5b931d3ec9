"""Every error of the pipeline, one class per failure reason, in one module.

A class says four things (modelled on httpx's ``_exceptions.py``): ``reason``, the code
recorded on a failed job (``JobError.code``, shown to producers: a promise, never
renamed); ``retryable``, whether another try could end differently; ``retry_rule``, how
the running task tries again by itself (``None``: it does not, the job fails); and
``hint``, what a person should do. A stage returns ``Fail(error)`` or ``Retry(error)``
(``workers/stages/steps.py``) holding the instance; the task raises that same instance
(``workers/tasks/base.py``), so Flower lists a failed job's task under its reason's class.

::

    NbqError                            base; unknown reasons   reason        retry rule
    ├── EvolinkError                    the API client (no key, no signed URL in messages)
    │   ├── RequestRejectedError        400 (also an InvalidRequestError)   invalid_request
    │   │   └── RequestTooLargeError    413                     request_too_large
    │   ├── UnauthorizedError           401: key rejected       unauthorized  KEY_RECHECK
    │   ├── QuotaExceededError          402: out of credits     insufficient_quota  BREAKER_WAIT
    │   ├── ModelAccessDeniedError      403                     model_access_denied
    │   ├── NotFoundError               404                     not_found
    │   │   └── TaskNotFoundError       404 to a query          task_not_found
    │   ├── RateLimitedError            429                     rate_limited  BACKOFF
    │   ├── ServerError                 5xx                     server_error  BACKOFF
    │   ├── MalformedResponseError      an unreadable 2xx       malformed_response  BACKOFF
    │   ├── TransportError              no HTTP answer          transport_error  BACKOFF
    │   │   ├── ApiTimeoutError         connect/read timeout    timeout
    │   │   └── ApiConnectionError      refused/reset/dropped   connection_error
    │   ├── ApiUnavailableError         the API kept failing    api_unavailable
    │   └── TaskFailedError             the task ended failed   (the task's code)
    │       └── ContentPolicyViolationError                     content_policy_violation
    ├── QuotaBreakerOpenError           submissions paused (quota)           BREAKER_WAIT
    ├── SubmissionsPausedUnauthorizedError  paused (key rejected)            BREAKER_WAIT
    ├── PipelineError                   result links and storage
    │   ├── UnsafeUrlError              refused by the URL guard  unsafe_result_url
    │   ├── ResultExpiredError          link answered 403/404/410 result_expired
    │   ├── ResultTooLargeError         over NBQ_MAX_RESULT_BYTES result_too_large
    │   ├── NotAnImageError             not PNG/JPEG/WebP/GIF     not_an_image
    │   ├── ResultRedirectLoopError     loops / too many hops     redirect_loop
    │   ├── ResultFetchError            5xx, timeout, broken      download_failed  BACKOFF
    │   └── StorageError                S3/MinIO failing          storage_unavailable  BACKOFF
    ├── StoreUnreachableError           the job store (Redis) did not answer   STORE_WAIT
    ├── DeadlineExceededError           not done by NBQ_POLL_DEADLINE_S   deadline_exceeded
    ├── OutcomeUnknownError             a create that may have been paid  outcome_unknown
    ├── RecordLostError                 the store lost the record         record_lost
    └── ProducerError                   what the producer API raises (``producers.errors``)
        ├── InvalidRequestError         a rule the request breaks; ``field``  invalid_request
        ├── CreditBudgetExceededError   a daily budget refused it   credit_budget_exceeded
        ├── JobNotFoundError            no such job (or past retention)
        ├── JobNotCancellableError      the job already ended
        └── JobActionRefusedError       ``nbq retry`` / ``adopt`` does not apply
            └── MayPayTwiceError        ``nbq retry`` may pay twice: confirm

The rules: ``BACKOFF`` (jittered exponential, at least a server's Retry-After, at most
NBQ_MAX_TRANSIENT_RETRIES times), ``BREAKER_WAIT`` (the quota breaker's wait, without
bound, not spending that budget), ``KEY_RECHECK`` (re-check a paused key every
``KEY_RECHECK_S``, without bound) and ``STORE_WAIT`` (backoff, without bound). The stage
that retries says which state an exhausted retry may fail the job from, and with which
failure (``ApiUnavailableError`` for the API, the same class for a download).

Boundary modules (the API client, the result fetcher, the object store) translate
httpx/minio/urllib3 errors into these with ``raise ... from exc``; Celery tasks never
import those libraries. Every message is safe to store and log: none carries the API key
or a signed URL's query string. ``docs/failure-handling.md`` lists every reason; a test
checks it against :data:`FAILURE_CLASSES`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanobanana_queue.workers.jobs.record import JobError
    from nanobanana_queue.workers.policy.schedule import Backoff

#: Longest job-error message quoted in a failed task's exception (the record keeps it all).
MAX_MESSAGE_CHARS = 300
#: Longest single wait of a queued job on the breaker (a hop, re-checked after).
MAX_QUOTA_WAIT_S = 300.0
#: How often a job paused by a rejected key re-checks the breaker.
KEY_RECHECK_S = MAX_QUOTA_WAIT_S / 5

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


# -- how a task tries again ------------------------------------------------------------


class Wait(StrEnum):
    BREAKER = "breaker"  # the breaker's own wait, clamped to [1, MAX_QUOTA_WAIT_S]
    KEY_RECHECK = "key_recheck"  # KEY_RECHECK_S
    BACKOFF = "backoff"  # Backoff.delay_s(attempt), at least a server's Retry-After


@dataclass(frozen=True)
class RetryRule:
    """How a task runs itself again after an error of this class (a Celery retry)."""

    name: str
    wait: Wait
    #: At most NBQ_MAX_TRANSIENT_RETRIES retries (False: without bound).
    bounded: bool = True
    #: Whether the retry counts towards that budget: an unbounded wait (a quota pause)
    #: that did not spend it leaves the job its whole budget for the next transient error.
    spends_budget: bool = True

    def delay_s(
        self, *, attempt: int, backoff: Backoff, rng: random.Random, wait_s: float | None = None
    ) -> float:
        """How long before retry number ``attempt``; ``wait_s`` is the breaker's wait or
        a server's Retry-After."""
        if self.wait is Wait.BREAKER:
            return min(max(wait_s or 0.0, 1.0), MAX_QUOTA_WAIT_S)
        if self.wait is Wait.KEY_RECHECK:
            return KEY_RECHECK_S
        return backoff.delay_s(attempt, rng, wait_s)

    def budget(self, *, transient_retries: int) -> int | None:
        """How many retries this rule allows (None: without bound)."""
        return transient_retries if self.bounded else None


BACKOFF = RetryRule("backoff", Wait.BACKOFF)
BREAKER_WAIT = RetryRule("breaker_wait", Wait.BREAKER, bounded=False, spends_budget=False)
KEY_RECHECK = RetryRule("key_recheck", Wait.KEY_RECHECK, bounded=False, spends_budget=False)
STORE_WAIT = RetryRule("store_wait", Wait.BACKOFF, bounded=False)
RETRY_RULES = (BACKOFF, BREAKER_WAIT, KEY_RECHECK, STORE_WAIT)


# -- the base --------------------------------------------------------------------------


class NbqError(Exception):
    """Base of every pipeline error; a failed job whose reason has no class of its own."""

    #: The code recorded on a failed job (an instance may narrow it: a task's own code).
    reason: str = "failed"
    #: Whether another try (a retry, a recreate, a person's ``nbq retry``) could help.
    retryable: bool = False
    #: How the running task tries again by itself; None: it does not (the job fails).
    retry_rule: RetryRule | None = None
    #: What a person should do about a job failed for this reason.
    hint: str = "see `nbq status <job_id>` for the error and submit a new job"

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The HTTP status and the API's own error code, when an answer had them.
        self.status_code = status_code
        self.code = code
        #: A server's Retry-After, in seconds.
        self.retry_after_s = retry_after_s
        #: Set once this error failed a job (``failed_job``).
        self.job_id: str | None = None

    def job_error(self, *, message: str | None = None) -> JobError:
        """What the job record keeps about this failure."""
        from nanobanana_queue.workers.jobs.record import JobError

        text = message if message is not None else (self.message or str(self))
        return JobError(code=self.reason, message=text[:1000], retryable=self.retryable)

    def failed_job(self, job_id: str, error: JobError) -> None:
        """This error just failed ``job_id``: its text becomes what Flower shows (the job,
        the reason, the recorded message and what to do)."""
        detail = error.message[:MAX_MESSAGE_CHARS]
        if len(error.message) > MAX_MESSAGE_CHARS:
            detail += "..."
        self.job_id = job_id
        self.args = (f"job {job_id} failed ({error.code}): {detail}. What to do: {self.hint}",)

    def __reduce__(self) -> tuple[object, ...]:
        # Attributes survive pickling (billiard, a result backend if one is added),
        # whatever a subclass's constructor takes.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[NbqError], args: tuple[Any, ...], state: dict[str, Any]) -> NbqError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


# -- what producers catch (raised by the store, cancel, manual actions, the producer) ----


class ProducerError(Exception):
    """Base of everything the producer API raises."""


class InvalidRequestError(NbqError, ProducerError, ValueError):
    """The request breaks a rule; ``field`` names it. From a producer: nothing enqueued."""

    reason = "invalid_request"
    hint = "fix the field the message names and submit a new job"

    def __init__(self, message: str = "", *, field: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.field = field


class CreditBudgetExceededError(NbqError, ProducerError):
    """A daily credit budget would be exceeded by this job's price; nothing sent.

    ``budget`` names the setting: ``NBQ_CREDIT_LIMIT_DAILY`` or
    ``NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER``.
    """

    reason = "credit_budget_exceeded"
    retryable = True
    hint = (
        "a daily credit budget (NBQ_CREDIT_LIMIT_DAILY / _PER_PRODUCER) would have been "
        "exceeded, so no create was sent (nothing paid): `nbq retry <job_id>` once the "
        "budget allows (the next UTC day, or a raised limit)"
    )

    def __init__(self, message: str = "", *, budget: str = "NBQ_CREDIT_LIMIT_DAILY") -> None:
        super().__init__(message)
        self.budget = budget


class JobNotFoundError(ProducerError, KeyError):
    """No record for this job id (never created, or past retention)."""

    def __str__(self) -> str:
        return f"job {self.args[0]!r} not found"


class JobNotCancellableError(ProducerError):
    """The job already ended (stored or failed): there is nothing to cancel."""


class JobActionRefusedError(ProducerError):
    """``retry`` or ``adopt`` does not apply to the job as it is; nothing was changed."""


class MayPayTwiceError(JobActionRefusedError):
    """``retry`` may pay for nothing: the job's create may already have been paid, or it
    failed for a permanent reason; it needs explicit consent (the message says which)."""


# -- the API client --------------------------------------------------------------------


class EvolinkError(NbqError):
    """Base of every API client error; ``reason`` also labels ``nbq_api_calls_total``."""

    reason = "api_error"


class RequestRejectedError(EvolinkError, InvalidRequestError):
    """400: bad parameters, content policy, size (the API's ``code`` when it gave one)."""

    reason = "invalid_request"


class RequestTooLargeError(RequestRejectedError):
    """413: the body or a reference image is too large."""

    reason = "request_too_large"
    hint = "send a shorter prompt or smaller/fewer reference images"


class UnauthorizedError(EvolinkError):
    """401: the API key is missing, wrong or expired: submissions pause, a person is paged."""

    reason = "unauthorized"
    retry_rule = KEY_RECHECK


class QuotaExceededError(EvolinkError):
    """402: no credits left; submissions pause until an operator tops up (jobs wait)."""

    reason = "insufficient_quota"
    retry_rule = BREAKER_WAIT

    @property
    def is_daily_limit(self) -> bool:
        return (self.code or "") in DAILY_QUOTA_CODES


class ModelAccessDeniedError(EvolinkError):
    """403: this key may not use the model."""

    reason = "model_access_denied"
    hint = "the API key may not use this model; check the key's plan on Evolink"


class NotFoundError(EvolinkError):
    """404: unknown task id, or a result link that no longer exists."""

    reason = "not_found"


class TaskNotFoundError(NotFoundError):
    """404 to a task query: the API forgot (or never had) the job's task."""

    reason = "task_not_found"
    hint = "the API no longer knows the task; submit the job again"


class RateLimitedError(EvolinkError):
    """429: a rate or concurrency limit; wait ``retry_after_s`` if given."""

    retryable = True
    reason = "rate_limited"
    retry_rule = BACKOFF


class ServerError(EvolinkError):
    """500/502/503 and other 5xx answers."""

    retryable = True
    reason = "server_error"
    retry_rule = BACKOFF


class MalformedResponseError(EvolinkError):
    """A success status whose body is not the task JSON we expect: the call worked (a
    create made its task) but the answer was garbled, so a create's outcome is unknown."""

    retryable = True
    reason = "malformed_response"
    retry_rule = BACKOFF


class TransportError(EvolinkError):
    """No HTTP answer. For a create, the task may nevertheless exist."""

    retryable = True
    reason = "transport_error"
    retry_rule = BACKOFF

    def __init__(self, message: str = "", *, create_may_have_happened: bool = False) -> None:
        super().__init__(message)
        self.create_may_have_happened = create_may_have_happened


class ApiTimeoutError(TransportError):
    """Connect or read timeout."""

    reason = "timeout"


class ApiConnectionError(TransportError):
    """Connection refused, reset or dropped mid-answer."""

    reason = "connection_error"


class ApiUnavailableError(EvolinkError):
    """The API kept failing (5xx/429/timeouts) until a stage's retries ran out."""

    retryable = True
    reason = "api_unavailable"
    hint = "the Evolink API kept failing (5xx/429/timeouts); check its status, then resubmit"


class TaskFailedError(EvolinkError):
    """The task ended ``failed``; its code decides: a fresh task (``recreates``) or never.

    Build it with :meth:`of` (a content-policy refusal gets its own class).
    """

    reason = "generation_failed"
    hint = "the API's task failed with this code; change the request or submit it again"

    def __init__(self, code: str = "unknown_error", message: str = "") -> None:
        super().__init__(f"task failed: {code}: {message}", code=code)
        self.reason = code  # the task's own code is the job's reason
        self.retryable = self.recreates

    @staticmethod
    def of(code: str | None, message: str) -> TaskFailedError:
        cls = ContentPolicyViolationError if code == "content_policy_violation" else TaskFailedError
        return cls(code or "unknown_error", message)

    @property
    def recreates(self) -> bool:
        """Whether the code deserves a fresh API task (unknown codes do, as the vendor's
        own clients do)."""
        return (self.code or "unknown_error") not in PERMANENT_TASK_CODES


class ContentPolicyViolationError(TaskFailedError):
    """The API refused the prompt or reference images."""

    reason = "content_policy_violation"
    hint = (
        "the API refused the prompt or reference images; rephrase them and submit a new "
        "job (the same request will be refused again)"
    )


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


# -- submissions paused ----------------------------------------------------------------


class QuotaBreakerOpenError(NbqError):
    """Submissions are paused by the quota breaker; the job waits in the queue."""

    reason = "breaker_open"
    retry_rule = BREAKER_WAIT


class SubmissionsPausedUnauthorizedError(NbqError):
    """Submissions are paused because the API rejected the key (HTTP 401)."""

    reason = "key_rejected"
    retry_rule = BREAKER_WAIT


# -- result links and storage ----------------------------------------------------------


class PipelineError(NbqError):
    """Result links and object storage."""

    reason = "pipeline_error"


class UnsafeUrlError(PipelineError, ValueError):
    """Refused before any byte is fetched; the message names the URL and why."""

    reason = "unsafe_result_url"
    hint = (
        "the URL guard refused the result link (scheme, host or private address); "
        "check NBQ_RESULT_URL_ALLOWED_HOSTS if the host is legitimate"
    )


class ResultExpiredError(PipelineError):
    """The signed result link answered 403/404/410 (or another status not worth a retry)."""

    reason = "result_expired"
    hint = "the signed result link expired before the download; submit the job again"


class ResultTooLargeError(PipelineError):
    reason = "result_too_large"
    hint = "the result exceeds NBQ_MAX_RESULT_BYTES; raise it if the size is expected"


class NotAnImageError(PipelineError):
    reason = "not_an_image"
    hint = (
        "the result link served something that is not an image (nothing was stored); "
        "submit the job again and report the Evolink task id if it repeats"
    )


class ResultRedirectLoopError(PipelineError):
    """A link that comes back to a URL it already visited, or exceeds
    NBQ_DOWNLOAD_MAX_REDIRECTS: retrying the same link cannot end differently."""

    reason = "redirect_loop"
    hint = (
        "the result link redirected in a loop or past NBQ_DOWNLOAD_MAX_REDIRECTS; the "
        "vendor's link is broken: the task id is kept (nbq status), ask the vendor"
    )


class ResultFetchError(PipelineError):
    """Transient trouble fetching a result (5xx, timeout, broken transfer)."""

    reason = "download_failed"
    retryable = True
    retry_rule = BACKOFF
    hint = "fetching the result kept failing; the task id is kept, submit again if links expired"


class StorageError(PipelineError):
    """S3/MinIO unreachable or failing."""

    reason = "storage_unavailable"
    retryable = True
    retry_rule = BACKOFF
    hint = "S3/MinIO kept failing; check the object store, then submit the job again"


# -- the job store and the job's own clock ---------------------------------------------


class StoreUnreachableError(NbqError):
    """The job store did not answer: the task's message is kept and sent again later
    (it may be all that is left of a paid job if the store comes back empty)."""

    reason = "store_unreachable"
    retryable = True
    retry_rule = STORE_WAIT


class DeadlineExceededError(NbqError):
    """The task did not finish within NBQ_POLL_DEADLINE_S."""

    reason = "deadline_exceeded"
    retryable = True
    hint = (
        "the task did not finish within NBQ_POLL_DEADLINE_S; the Evolink task id is kept "
        "(nbq status): check it on Evolink, or raise the deadline"
    )


class OutcomeUnknownError(NbqError):
    """A create that may have reached the API (and been charged) got no answer."""

    reason = "outcome_unknown"
    hint = (
        "a create may have reached the API (and been charged); look the job up "
        "(nbq status shows attempts) before resubmitting, so it is not paid twice"
    )


class RecordLostError(NbqError):
    """The job store lost the job's record before it finished."""

    reason = "record_lost"
    retryable = True
    hint = (
        "the job store lost this job's record before any API task was made (nothing was "
        "paid): enqueue the request again"
    )


#: The reasons a job can fail with, each with its one class (docs/failure-handling.md
#: lists them; a test checks). A task's other failure codes are TaskFailedError's.
FAILURE_CLASSES: tuple[type[NbqError], ...] = (
    InvalidRequestError,
    RequestTooLargeError,
    CreditBudgetExceededError,
    ContentPolicyViolationError,
    TaskFailedError,
    TaskNotFoundError,
    ModelAccessDeniedError,
    DeadlineExceededError,
    OutcomeUnknownError,
    ApiUnavailableError,
    ResultExpiredError,
    NotAnImageError,
    ResultTooLargeError,
    UnsafeUrlError,
    ResultFetchError,
    StorageError,
    ResultRedirectLoopError,
    RecordLostError,
)
