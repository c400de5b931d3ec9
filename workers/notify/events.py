"""The events a job's end sends, their body and their stable ``webhook-id``.

The body is the job's public view (``JobRecord.public_view``: state, error with its code
and message, stored objects with keys and sha256, credits, state times), never the
result links' signatures, the poll token, the notify URL itself or any secret; it is the
producer's own job, so no other producer's data can be in it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Final

from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState

#: The event each end state sends (the webhook's ``type``).
EVENT_FOR_STATE: Final[dict[JobState, str]] = {
    JobState.STORED: "job.stored",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
    JobState.OUTCOME_UNKNOWN: "job.outcome_unknown",  # a person is asked to act
}
EVENTS: Final = tuple(EVENT_FOR_STATE.values())

#: The opt-in, best-effort event of a job's progress (NBQ_NOTIFY_PROGRESS): not an end,
#: not in the outbox; one per distinct progress value.
PROGRESS_EVENT: Final = "job.progress"

#: What each event asks the receiver to do (in the body, for people reading a log).
WHAT_TO_DO: Final[dict[str, str]] = {
    "job.stored": "fetch the objects (keys and sha256 in data.objects; nbq results JOB)",
    "job.failed": "read data.error; `nbq retry JOB` re-sends it if the reason allows",
    "job.cancelled": "nothing: the job was cancelled",
    "job.outcome_unknown": (
        "wait: the API's callback may still adopt its task; else `nbq adopt JOB TASK` "
        "or `nbq retry JOB --yes` (may pay twice)"
    ),
    PROGRESS_EVENT: "nothing yet: data.progress and data.state say how far it is",
}

_HIDDEN: Final = ("notify_url", "on_done_task", "on_done_queue")


def webhook_id(job_id: str, event: str, at: float) -> str:
    """The same id for every try of one event (a job's end at ``at``, its updated_at):
    a receiver de-duplicates on it; a later end of the same job has another."""
    digest = hashlib.sha256(f"{job_id}|{event}|{at!r}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


def progress_webhook_id(job_id: str, state: str, progress: int) -> str:
    """One id per progress step of a job (its state and progress value): every try of that
    event reuses it, and a repeat of the same step is de-duplicated by the receiver."""
    digest = hashlib.sha256(f"{job_id}|{PROGRESS_EVENT}|{state}|{progress}".encode())
    return f"msg_{digest.hexdigest()[:32]}"


def public_view(record: JobRecord, event: str) -> dict[str, Any]:
    """The job's public view as an event carries it (webhook ``data``, ``on_done``'s ``job``)."""
    view = record.public_view()
    for name in _HIDDEN:
        view.pop(name, None)
    view["what_to_do"] = WHAT_TO_DO[event]
    return view


def body(record: JobRecord, event: str) -> dict[str, Any]:
    """``{"type", "timestamp", "data"}``: the envelope Standard Webhooks receivers expect."""
    view = public_view(record, event)
    at = datetime.fromtimestamp(record.updated_at or 0, tz=UTC)
    return {"type": event, "timestamp": at.isoformat(), "data": view}
