"""The job record: everything a person or a stage needs to know about one job.

Stored as a Redis hash (one field per attribute, JSON for nested values) so that state
transitions can be checked and applied atomically in a Lua script. Never holds a secret.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nanobanana_queue.workers.jobs.state import JobState

#: Fields stored as JSON inside the hash.
JSON_FIELDS = frozenset({"request", "error", "objects", "result_urls", "previous_task_ids"})


class JobError(BaseModel):
    """Why a job failed, in words a person understands."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    retryable: bool = False


class StoredObject(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    sha256: str
    size: int
    content_type: str
    source_index: int = 0


class JobRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str
    state: JobState = JobState.QUEUED
    request: dict[str, Any] = Field(default_factory=dict)
    producer: str | None = None
    batch_id: str | None = None
    #: high | normal | low: order within the producer's own jobs (the fair-share gate).
    priority: str = "normal"
    evolink_task_id: str | None = None
    progress: int = 0
    attempts: int = 0  # API create calls made (each possibly paid): the create attempts
    paid_creates: int = 0  # tasks the API accepted (a create answered, or a task adopted)
    create_seq: int = 1  # fresh-task round; the idempotency key is derived from it
    previous_task_ids: list[str] = Field(default_factory=list)  # tasks replaced by recreate
    poll_token: str | None = None  # only the poll carrying this token may continue the chain
    polls: int = 0
    estimated_time_s: float | None = None
    #: Credits this job holds on the day's budget now (its next create's estimated
    #: price; 0 once that create is charged or the job ended): workers/resilience/credits.py.
    credits_reserved: float = 0.0
    #: The UTC day (YYYY-MM-DD) of the book that hold is on.
    credits_held_on: str | None = None
    #: Sum of the charges of this job's paid creates (``usage.credits_reserved`` of each).
    credits_paid: float = 0.0
    result_urls: list[str] = Field(default_factory=list)
    objects: list[StoredObject] = Field(default_factory=list)
    error: JobError | None = None
    waiting_reason: str | None = None  # why a queued job is not moving (quota, rate limit)
    #: A queued (or again submitting) job whose earlier create's outcome is unknown: it is
    #: not resent unless the operator's policy says so. Only the transition table writes it
    #: (workers/jobs/lifecycle.py, ``SUBSTATE_FIELDS``). (``create_sent``, a flag of the
    #: claim that said "a create may be in flight", was the state ``submitting`` itself:
    #: no longer written, and ignored in a record written before.)
    create_outcome_unknown: bool = False
    #: The worker (hostname) whose submit claimed the create; its lease lapsing tells the
    #: reconciler at once that the create's outcome is unknown (workers/leases.py).
    claimed_by: str | None = None
    #: ``outcome_unknown``: the job waits for its task's callback until then (epoch s).
    outcome_deadline_at: float | None = None
    #: Task id a verified callback reported while the job could not take it yet.
    callback_task_id: str | None = None
    #: A person accepted that adopting this task may re-create it (a new paid create).
    adopt_consent_task_id: str | None = None
    #: When the job's first create was sent (epoch s): a task created earlier is not its.
    first_create_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    deadline_at: float | None = None  # polling deadline (epoch seconds)
    next_poll_at: float | None = None
    state_times: dict[str, float] = Field(default_factory=dict)
    #: Set when the record had vanished from the store and was re-created from a message
    #: carrying the task id (the request is then unknown); see workers/stages/rescue.py.
    recovered_at: float | None = None
    #: W3C ``traceparent`` of the job's enqueue when tracing is on (workers/tracing.py): a
    #: message the reconciler re-drives joins the job's trace. Not in the public view.
    traceparent: str | None = None
    #: Where the job's end is told (a signed webhook, workers/notify/); checked at enqueue.
    notify_url: str | None = None
    #: ``on_done``: a Celery task and queue told of the job's end (workers/notify/on_done.py).
    on_done_task: str | None = None
    on_done_queue: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    def holds_request(self, api_json: dict[str, Any]) -> bool:
        """Whether ``api_json`` (a validated request's API JSON) is this job's request.

        A caller-chosen job id is an idempotency key for *one* request: the same request
        again is the same job; another one under that id is a conflict, never silently
        the old job. Compared in the stored (canonical JSON) form. A rescued record does
        not know its request (``recovered_at``): it cannot tell, and says yes.
        """
        if self.recovered_at is not None and not self.request:
            return True
        return encode_field("request", self.request) == encode_field("request", api_json)

    def to_hash(self) -> dict[str, str]:
        """Flatten to Redis hash fields (None values left out)."""
        out: dict[str, str] = {}
        for name, value in self.model_dump(mode="json", exclude={"state_times"}).items():
            if value is None:
                continue
            out[name] = encode_field(name, value)
        for state, at in self.state_times.items():
            out[f"t_{state}"] = str(at)
        return out

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> JobRecord:
        data: dict[str, Any] = {}
        for name, value in raw.items():
            if name.startswith("t_"):
                data.setdefault("state_times", {})[name[2:]] = float(value)
            elif name in JSON_FIELDS:
                data[name] = json.loads(value)
            else:
                data[name] = value
        if "credits_paid" not in data and "credits_reserved" in data:
            # A record written before holds existed: its credits_reserved summed charges.
            data["credits_paid"], data["credits_reserved"] = data["credits_reserved"], 0.0
        if data.get("create_outcome_unknown") is not None:
            data["create_outcome_unknown"] = data["create_outcome_unknown"] in ("1", "true", "True")
        return cls.model_validate(data)

    def public_view(self) -> dict[str, Any]:
        """What status commands and the ingress show (result links stripped of signatures)."""
        data = self.model_dump(mode="json", exclude={"result_urls", "poll_token", "traceparent"})
        # Results known: links while downloading, stored objects after (links are dropped).
        data["result_count"] = max(len(self.result_urls), len(self.objects))
        return data


def encode_field(name: str, value: Any) -> str:
    """One hash field's string form."""
    if name in JSON_FIELDS:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
