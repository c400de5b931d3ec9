"""Why a job failed, as the exception its last Celery task ends with (Flower's FAILURE).

A stage that moves a job to ``failed`` records the failure here (``fail_job`` does it
once, only when its transition won); the task wrapper (``workers.tasks.base``) then
raises the matching class, so Flower lists the task as FAILURE under a name that says
why, with a message saying what a person can do. One class per failure reason::

    JobFailed                       base (unknown reasons); never retried by Celery
    ├── InvalidRequest              invalid_request (bad parameters, 400)
    │   └── RequestTooLarge         request_too_large (413)
    ├── GenerationFailed            a task error code (task ended ``failed``)
    │   └── ContentPolicyViolation  content_policy_violation
    ├── TaskNotFound                task_not_found (the API forgot the task)
    ├── ModelAccessDenied           model_access_denied (403)
    ├── DeadlineExceeded            deadline_exceeded
    ├── OutcomeUnknown              outcome_unknown (a create that may have happened)
    ├── ApiUnavailable              api_unavailable (the API kept failing)
    ├── ResultExpired               result_expired
    ├── ResultNotAnImage            not_an_image
    ├── ResultTooLarge              result_too_large
    ├── UnsafeResultUrl             unsafe_result_url
    ├── DownloadFailed              download_failed (transfers kept failing)
    ├── StorageUnavailable          storage_unavailable (S3 kept failing)
    ├── ResultRedirectLoop          redirect_loop (the result link loops)
    ├── RecordLost                  record_lost (the store lost a job before its create)
    └── CreditBudgetExceeded        credit_budget_exceeded (a daily budget refused it)

The exceptions carry only the job id, the reason code and the job error's message
(already safe to store on the job record: no key, no signed link query). They pickle
and their ``repr`` (what Celery's ``task-failed`` event and Flower show) is one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ClassVar

from nanobanana_queue.workers.jobs.record import JobError

#: Longest job-error message quoted in an exception (the record keeps the whole one).
MAX_MESSAGE_CHARS = 300


class JobFailed(Exception):  # noqa: N818 - named for what happened, as Flower shows it
    """The job ended ``failed``; retrying this task cannot help (``hint`` says what can)."""

    reason: ClassVar[str] = "failed"
    hint: ClassVar[str] = "see `nbq status <job_id>` for the error and submit a new job"

    def __init__(self, message: str, *, job_id: str = "", code: str = "") -> None:
        super().__init__(message)
        self.job_id = job_id
        self.code = code or self.reason

    @classmethod
    def for_job(cls, job_id: str, error: JobError) -> JobFailed:
        detail = error.message[:MAX_MESSAGE_CHARS]
        if len(error.message) > MAX_MESSAGE_CHARS:
            detail += "..."
        return cls(
            f"job {job_id} failed ({error.code}): {detail}. What to do: {cls.hint}",
            job_id=job_id,
            code=error.code,
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword arguments survive pickling (billiard, a result backend if one is added).
        return (type(self), (str(self),), self.__dict__)


class InvalidRequest(JobFailed):
    reason = "invalid_request"
    hint = "fix the field the message names and submit a new job"


class RequestTooLarge(InvalidRequest):
    reason = "request_too_large"
    hint = "send a shorter prompt or smaller/fewer reference images"


class GenerationFailed(JobFailed):
    reason = "generation_failed"
    hint = "the API's task failed with this code; change the request or submit it again"


class ContentPolicyViolation(GenerationFailed):
    reason = "content_policy_violation"
    hint = (
        "the API refused the prompt or reference images; rephrase them and submit a new "
        "job (the same request will be refused again)"
    )


class TaskNotFound(JobFailed):
    reason = "task_not_found"
    hint = "the API no longer knows the task; submit the job again"


class ModelAccessDenied(JobFailed):
    reason = "model_access_denied"
    hint = "the API key may not use this model; check the key's plan on Evolink"


class DeadlineExceeded(JobFailed):
    reason = "deadline_exceeded"
    hint = (
        "the task did not finish within NBQ_POLL_DEADLINE_S; the Evolink task id is kept "
        "(nbq status): check it on Evolink, or raise the deadline"
    )


class OutcomeUnknown(JobFailed):
    reason = "outcome_unknown"
    hint = (
        "a create may have reached the API (and been charged); look the job up "
        "(nbq status shows attempts) before resubmitting, so it is not paid twice"
    )


class ApiUnavailable(JobFailed):
    reason = "api_unavailable"
    hint = "the Evolink API kept failing (5xx/429/timeouts); check its status, then resubmit"


class ResultExpired(JobFailed):
    reason = "result_expired"
    hint = "the signed result link expired before the download; submit the job again"


class ResultNotAnImage(JobFailed):
    reason = "not_an_image"
    hint = (
        "the result link served something that is not an image (nothing was stored); "
        "submit the job again and report the Evolink task id if it repeats"
    )


class ResultTooLarge(JobFailed):
    reason = "result_too_large"
    hint = "the result exceeds NBQ_MAX_RESULT_BYTES; raise it if the size is expected"


class UnsafeResultUrl(JobFailed):
    reason = "unsafe_result_url"
    hint = (
        "the URL guard refused the result link (scheme, host or private address); "
        "check NBQ_RESULT_URL_ALLOWED_HOSTS if the host is legitimate"
    )


class DownloadFailed(JobFailed):
    reason = "download_failed"
    hint = "fetching the result kept failing; the task id is kept, submit again if links expired"


class StorageUnavailable(JobFailed):
    reason = "storage_unavailable"
    hint = "S3/MinIO kept failing; check the object store, then submit the job again"


class ResultRedirectLoop(JobFailed):
    reason = "redirect_loop"
    hint = (
        "the result link redirected in a loop or past NBQ_DOWNLOAD_MAX_REDIRECTS; the "
        "vendor's link is broken: the task id is kept (nbq status), ask the vendor"
    )


class RecordLost(JobFailed):
    reason = "record_lost"
    hint = (
        "the job store lost this job's record before any API task was made (nothing was "
        "paid): enqueue the request again"
    )


class CreditBudgetExceeded(JobFailed):
    reason = "credit_budget_exceeded"
    hint = (
        "a daily credit budget (NBQ_CREDIT_LIMIT_DAILY / _PER_PRODUCER) would have been "
        "exceeded, so no create was sent (nothing paid): `nbq retry <job_id>` once the "
        "budget allows (the next UTC day, or a raised limit)"
    )


#: Failure reason (job error code) → exception class; other codes of a failed API task
#: are GenerationFailed, anything else JobFailed.
BY_REASON: dict[str, type[JobFailed]] = {
    cls.reason: cls
    for cls in (
        InvalidRequest,
        RequestTooLarge,
        ContentPolicyViolation,
        TaskNotFound,
        ModelAccessDenied,
        DeadlineExceeded,
        OutcomeUnknown,
        ApiUnavailable,
        ResultExpired,
        ResultNotAnImage,
        ResultTooLarge,
        UnsafeResultUrl,
        DownloadFailed,
        StorageUnavailable,
        ResultRedirectLoop,
        RecordLost,
        CreditBudgetExceeded,
    )
}


def failure_class(code: str) -> type[JobFailed]:
    """The class for a job error code (task error codes fall back to GenerationFailed)."""
    from nanobanana_queue.workers.evolink.errors import PERMANENT_TASK_CODES, RETRYABLE_TASK_CODES

    if code in BY_REASON:
        return BY_REASON[code]
    if code in PERMANENT_TASK_CODES or code in RETRYABLE_TASK_CODES:
        return GenerationFailed
    return JobFailed


def failure_for(job_id: str, error: JobError) -> JobFailed:
    return failure_class(error.code).for_job(job_id, error)


_recorded: ContextVar[list[tuple[str, JobError]] | None] = ContextVar(
    "nbq_failures_recorded", default=None
)


@contextmanager
def recording() -> Iterator[list[tuple[str, JobError]]]:
    """Collect the jobs failed while the block runs (one task's run)."""
    failures: list[tuple[str, JobError]] = []
    token = _recorded.set(failures)
    try:
        yield failures
    finally:
        _recorded.reset(token)


def record_failure(job_id: str, error: JobError) -> None:
    """Note that this run moved ``job_id`` to failed (no-op outside a task run)."""
    failures = _recorded.get()
    if failures is not None:
        failures.append((job_id, error))
