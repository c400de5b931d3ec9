"""Batches from JSONL: one request per line, bad lines reported by number and skipped.

A batch has an id (``--batch-id``, or derived from the file's content) and each line's
job id is ``<batch>-<line number>`` (unless the line names its own ``job_id``). Job ids
are idempotency keys, so running the same file again enqueues only the lines that are
not enqueued yet: nothing is sent, or paid for, twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nanobanana_queue.producers.api import validate_request
from nanobanana_queue.producers.errors import InvalidRequestError
from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.jobs.ids import InvalidJobIdError, scoped_job_id, validate_job_id

if TYPE_CHECKING:
    from nanobanana_queue.producers.api import Producer

#: Keys a batch line may carry beside the request fields.
LINE_META_KEYS = ("job_id",)
#: Longest batch id: ``<batch>-<line>`` must stay a valid job id (128 characters); the
#: same bound as ``POST /v1/batches``.
MAX_BATCH_ID_CHARS = 100
#: Hex digits of the file's SHA-256 in a derived batch id (``b-`` + 16 hex).
DERIVED_ID_HEX = 16


@dataclass(frozen=True)
class BatchLine:
    line_no: int
    request: GenerationRequest
    job_id: str | None


@dataclass(frozen=True)
class BadLine:
    line_no: int
    error: str


def parse_jsonl(lines: Iterable[str]) -> Iterator[BatchLine | BadLine]:
    """Each non-blank line: a JSON object of request fields, optionally with ``job_id``."""
    for line_no, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            yield BadLine(line_no, f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except RecursionError:
            yield BadLine(line_no, "not valid JSON: nested too deeply")
            continue
        if not isinstance(data, dict):
            yield BadLine(line_no, "each line must be a JSON object")
            continue
        job_id = data.pop("job_id", None)
        if job_id is not None and not isinstance(job_id, str):
            yield BadLine(line_no, "job_id must be a string")
            continue
        try:
            yield BatchLine(line_no, validate_request(data), job_id)
        except InvalidRequestError as exc:
            yield BadLine(line_no, str(exc))


def derived_batch_id(content: bytes) -> str:
    """``b-<16 hex of the content's SHA-256>``: the same file gets the same batch id."""
    return "b-" + hashlib.sha256(content).hexdigest()[:DERIVED_ID_HEX]


def check_batch_id(batch_id: str) -> str:
    """A usable batch id (job ids are derived from it), else :class:`InvalidRequestError`."""
    try:
        validate_job_id(batch_id)
    except InvalidJobIdError as exc:
        raise InvalidRequestError(
            str(exc).replace("job_id", "batch id", 1), field="batch_id"
        ) from None
    if len(batch_id) > MAX_BATCH_ID_CHARS:
        raise InvalidRequestError(
            f"batch id is {len(batch_id)} characters; at most {MAX_BATCH_ID_CHARS}",
            field="batch_id",
        )
    return batch_id


@dataclass(frozen=True)
class Enqueued:
    """A line that is in the queue: sent now (``new``) or found from an earlier run."""

    line_no: int
    job_id: str
    new: bool


def enqueue_line(
    producer: Producer, line: BatchLine, *, batch_id: str, producer_name: str | None
) -> Enqueued:
    """Enqueue one line as ``<batch>-<line>`` (or its own ``job_id``); idempotent.

    A job already recorded under that id is not sent again; if it holds another request
    (the file's lines moved or changed under the same batch id) the line is refused
    rather than silently mapped to the wrong job.
    """
    wanted = line.job_id or f"{batch_id}-{line.line_no}"
    try:
        stored_id = scoped_job_id(producer_name, wanted)
    except InvalidJobIdError as exc:
        raise InvalidRequestError(str(exc), field="job_id") from None
    existing = producer.runtime.store.get(stored_id)
    if existing is not None:
        if existing.request and existing.request != line.request.to_api_json():
            raise InvalidRequestError(
                f"job {stored_id} already exists with a different request (lines moved or "
                "edited under the same batch id?); not enqueued: use another --batch-id",
                field="job_id",
            )
        return Enqueued(line.line_no, existing.job_id, new=False)
    scoped_batch = scoped_job_id(producer_name, batch_id)
    handle = producer.enqueue(
        line.request, job_id=wanted, producer=producer_name, batch_id=scoped_batch
    )
    return Enqueued(line.line_no, handle.job_id, new=True)


def add_batch_members(producer: Producer, batch_id: str, job_ids: list[str]) -> None:
    """Record the batch's jobs where ``nbq jobs --batch`` and ``GET /v1/batches`` read them
    (``<prefix>:batch:<id>``, kept as long as job records)."""
    if not job_ids:
        return
    store = producer.runtime.store
    key = f"{store.prefix}:batch:{batch_id}"
    pipe = store.redis.pipeline()
    pipe.sadd(key, *job_ids)
    pipe.expire(key, producer.settings.job_retention_s)
    pipe.execute()
