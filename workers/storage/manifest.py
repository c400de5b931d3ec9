"""Object keys, per-object metadata and the per-job manifest.

Layout in the bucket (``prefix`` is ``NBQ_S3_PREFIX``)::

    {prefix}/{job_id}/{index}.{ext}        one object per result image, ext sniffed
    {prefix}/{job_id}/manifest.json        written last: its presence means "complete"

Manifest format (``MANIFEST_SCHEMA_VERSION`` = 1), JSON with sorted keys::

    {
      "schema_version": 1,
      "job_id": "...",
      "evolink_task_id": "task-..." | null,
      "producer": "..." | null,
      "batch_id": "..." | null,
      "request": {...},              the job's request; URLs without query/fragment/userinfo
      "timings": {
        "state_times": {"queued": 1700000000.0, ...},  epoch seconds, last entry per state
        "durations_s": {                               null when an end is not known
          "queued_to_submitting": ..., "generating": ..., "download": ...,
          "enqueue_to_stored": ...
        }
      },
      "polls": 3, "attempts": 1, "paid_creates": 1, "credits_paid": 1.6,
      "objects": [{"key", "sha256", "size", "content_type", "source_index"}, ...]
    }

A job whose record vanished from the store and was rescued from a message (see
``workers/stages/rescue.py``) also has ``"recovered": true`` and ``"recovered_at"`` (epoch
seconds); its ``"request"`` is ``null`` (unknown) and its timings start at the rescue.

Result URLs are never written (their query string is a bearer credential), nor is any
secret: the record holds none and request URLs are stripped of query and userinfo.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nanobanana_queue.workers.jobs.record import JobRecord, StoredObject
from nanobanana_queue.workers.jobs.state import JobState

__all__ = [
    "MANIFEST_SCHEMA_VERSION",
    "build_manifest",
    "manifest_key",
    "object_key_stem",
    "object_metadata",
    "prompt_sha256",
    "record_from_manifest",
]

MANIFEST_SCHEMA_VERSION = 1


def object_key_stem(prefix: str, job_id: str, index: int) -> str:
    """Key of result ``index`` without extension (the sniffed type adds it)."""
    return f"{prefix}/{job_id}/{index}"


def manifest_key(prefix: str, job_id: str) -> str:
    return f"{prefix}/{job_id}/manifest.json"


def prompt_sha256(prompt: str) -> str:
    """Hex SHA-256 of the UTF-8 prompt: finds objects by prompt without storing the text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def object_metadata(*, job_id: str, evolink_task_id: str | None, prompt: str) -> dict[str, str]:
    """S3 user metadata for one result image.

    Metadata travels as HTTP headers (ASCII, size-limited), so the prompt is stored as a
    hash; the text itself is in the manifest.
    """
    return {
        "job-id": job_id,
        "evolink-task-id": evolink_task_id or "",
        "prompt-sha256": prompt_sha256(prompt),
    }


def build_manifest(
    record: JobRecord, objects: list[StoredObject], *, stored_at: float | None = None
) -> dict[str, Any]:
    """The manifest for a job whose images are all stored (see the module docstring).

    ``stored_at`` ends the download and end-to-end durations when the record has no
    ``stored`` time yet (the manifest is written just before that transition); it
    defaults to now.
    """
    times = dict(record.state_times)
    end = times.get(JobState.STORED.value, stored_at if stored_at is not None else time.time())
    enqueued = times.get(JobState.QUEUED.value, record.created_at or None)
    manifest: dict[str, Any] = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "job_id": record.job_id,
        "evolink_task_id": record.evolink_task_id,
        "producer": record.producer,
        "batch_id": record.batch_id,
        "request": _without_credentials(record.request),
        "timings": {
            "state_times": times,
            "durations_s": {
                "queued_to_submitting": _span(enqueued, times.get(JobState.SUBMITTING.value)),
                "generating": _span(
                    times.get(JobState.GENERATING.value), times.get(JobState.DOWNLOADING.value)
                ),
                "download": _span(times.get(JobState.DOWNLOADING.value), end),
                "enqueue_to_stored": _span(enqueued, end),
            },
        },
        "polls": record.polls,
        "attempts": record.attempts,
        "paid_creates": record.paid_creates,
        "credits_paid": record.credits_paid,
        "objects": [o.model_dump(mode="json") for o in objects],
    }
    if record.recovered_at is not None:
        manifest["recovered"] = True
        manifest["recovered_at"] = record.recovered_at
        if not record.request:
            manifest["request"] = None  # unknown: the record holding it was lost
    return manifest


def _span(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(end - start, 3)


def _without_credentials(value: Any) -> Any:
    """Copy of ``value`` with every URL's query, fragment and userinfo removed."""
    if isinstance(value, dict):
        return {k: _without_credentials(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_credentials(v) for v in value]
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        parts = urlsplit(value)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return value


def record_from_manifest(manifest: dict[str, Any]) -> JobRecord:
    """The ``stored`` job a manifest describes: the durable record once the Redis record
    has expired (``NBQ_JOB_RETENTION_S``) or was lost. Raises ``ValueError`` if malformed."""
    try:
        timings = manifest.get("timings") or {}
        times = {str(k): float(v) for k, v in (timings.get("state_times") or {}).items()}
        created = times.get(JobState.QUEUED.value) or min(times.values(), default=0.0)
        return JobRecord(
            job_id=str(manifest["job_id"]),
            state=JobState.STORED,
            request=manifest.get("request") or {},
            producer=manifest.get("producer"),
            batch_id=manifest.get("batch_id"),
            evolink_task_id=manifest.get("evolink_task_id"),
            polls=int(manifest.get("polls") or 0),
            attempts=int(manifest.get("attempts") or 0),
            paid_creates=int(manifest.get("paid_creates") or 0),
            # manifests written before holds existed named the paid sum credits_reserved
            credits_paid=float(
                manifest.get("credits_paid") or manifest.get("credits_reserved") or 0.0
            ),
            objects=[StoredObject.model_validate(o) for o in manifest.get("objects") or []],
            progress=100,
            created_at=created,
            updated_at=times.get(JobState.STORED.value, created),
            state_times=times,
            recovered_at=manifest.get("recovered_at"),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a job manifest: {exc}") from None
