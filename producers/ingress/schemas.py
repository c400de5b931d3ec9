"""Request and response bodies of the ingress (and so its OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.jobs.ids import validate_job_id
from nanobanana_queue.workers.jobs.record import JobError, StoredObject
from nanobanana_queue.workers.jobs.state import JobState

#: Most jobs one ``POST /v1/batches`` may carry.
MAX_BATCH_JOBS = 1000
#: Longest batch id (job ids derived from it must stay within 128 characters).
MAX_BATCH_ID_CHARS = 100


def _checked_job_id(value: str | None) -> str | None:
    return None if value is None else validate_job_id(value)


class OnDone(BaseModel):
    """A Celery task of yours, sent to your queue when the job ends (``job=`` its view)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
    queue: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")


class JobCreate(GenerationRequest):
    """The request fields of the vendor spec, plus an optional caller-chosen ``job_id``.

    ``job_id`` is an idempotency key: the same id returns the same job and never creates
    a second API task. The ``Idempotency-Key`` header does the same.
    """

    job_id: str | None = Field(default=None, min_length=1, max_length=128)
    #: Order within this producer's own jobs (the fair-share gate): a high job goes before
    #: its normal backlog, never before another producer's share.
    priority: Literal["high", "normal", "low"] = "normal"
    notify_url: str | None = Field(
        default=None,
        max_length=2048,
        description="https URL told when the job ends: a signed Standard Webhooks POST "
        "(docs/webhooks.md); refused unless your producer has a webhook secret",
    )

    on_done: OnDone | None = Field(
        default=None,
        description="a Celery task sent to your queue when the job ends, with job= its view",
    )

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str | None) -> str | None:
        return _checked_job_id(value)

    def request_fields(self) -> dict[str, Any]:
        return self.model_dump(
            mode="json",
            exclude={"job_id", "notify_url", "on_done", "priority"},
            exclude_none=True,
        )


class JobView(BaseModel):
    """A job as its producer sees it (the record's public view; no secrets, no raw links)."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    state: JobState
    request: dict[str, Any] = Field(default_factory=dict)
    producer: str | None = None
    batch_id: str | None = None
    evolink_task_id: str | None = None
    progress: int = 0
    attempts: int = 0
    paid_creates: int = 0
    polls: int = 0
    credits_reserved: float = 0.0
    credits_paid: float = 0.0
    objects: list[StoredObject] = Field(default_factory=list)
    error: JobError | None = None
    waiting_reason: str | None = None
    result_count: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


class JobPage(BaseModel):
    """One page of the caller's jobs, newest first; ``next_cursor`` is null at the end."""

    jobs: list[JobView]
    next_cursor: str | None = Field(
        description="opaque: pass as ?cursor= for the next page (stable while jobs are added)"
    )


class ImageView(BaseModel):
    key: str
    url: str = Field(description="presigned GET URL")
    sha256: str
    size: int
    content_type: str


class ImagesView(BaseModel):
    job_id: str
    expires_in_s: int
    images: list[ImageView]


class BatchCreate(BaseModel):
    """Many requests under one batch id; each may carry its own ``job_id``.

    Jobs without a ``job_id`` get ``<batch_id>-<index>``, so repeating the same batch
    (same ``batch_id`` or ``Idempotency-Key``) never enqueues a job twice. Each request
    is validated on its own (a bad one is listed in ``refused``, the others enqueued),
    so the items are documented as ``JobCreate`` but read as plain objects here.
    """

    model_config = ConfigDict(extra="forbid")

    batch_id: str | None = Field(default=None, min_length=1, max_length=MAX_BATCH_ID_CHARS)
    notify_url: str | None = Field(
        default=None, max_length=2048, description="every job's notify_url unless it has its own"
    )
    requests: Annotated[
        list[Any],
        WithJsonSchema(
            {
                "type": "array",
                # Any item is accepted by the schema: an invalid one is refused on its
                # own (listed in ``refused``), it does not make the batch invalid.
                "items": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/JobCreate"},
                        {"description": "anything else: refused, listed in `refused`"},
                    ]
                },
                "minItems": 1,
                "maxItems": MAX_BATCH_JOBS,
                "title": "Requests",
            }
        ),
    ] = Field(min_length=1, max_length=MAX_BATCH_JOBS)

    @field_validator("batch_id")
    @classmethod
    def _batch_id(cls, value: str | None) -> str | None:
        return _checked_job_id(value)


class RefusedJob(BaseModel):
    """One request of a batch that was not enqueued, and why (nothing of it was written)."""

    index: int
    job_id: str
    code: str
    message: str
    field: str | None = Field(default=None, description="the invalid field, for invalid_request")


class BatchCreated(BaseModel):
    batch_id: str
    job_ids: list[str]
    refused: list[RefusedJob] = Field(default_factory=list)


class BatchView(BaseModel):
    batch_id: str
    total: int
    done: int = Field(description="jobs in a final state (stored, failed, cancelled)")
    counts: dict[str, int] = Field(description="jobs by state")
    job_ids: list[str]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ok or unavailable")
    checks: dict[str, bool] = Field(description="redis, s3, broker: reachable or not")


class CallbackAnswer(BaseModel):
    outcome: str
