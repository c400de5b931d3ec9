"""``GET /v1/jobs/{id}/events``: a job followed as Server-Sent Events until it ends.

Each change of state or progress is one event (``event: job``, ``data:`` the job's public
view, ``id:`` its ``updated_at`` in milliseconds); the end is one ``event: end`` with the
final view, then the stream closes. A reconnect with ``Last-Event-ID`` gets the job as it
is now only if it changed since that id (intermediate progress collapses into the current
view; the end is never missed). Woken by the job's end push (``workers/notify/push.py``)
and re-read every ``REREAD_S`` for progress, one HGETALL per stream per re-read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from nanobanana_queue.producers.ingress.context import Context, ProducerName
from nanobanana_queue.producers.ingress.errors import documented
from nanobanana_queue.producers.ingress.jobs_routes import owned_record, view
from nanobanana_queue.workers.notify.push import job_end_channel

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

#: Progress re-read interval of a stream (seconds); the end wakes it at once.
REREAD_S = 0.5
#: A stream closes after this long even if the job has not ended (reconnect to go on).
MAX_STREAM_S = 3600.0


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `job` per change, then `end`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **documented(401, 404),
    },
)
def job_events(
    job_id: str,
    context: Context,
    producer: ProducerName,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
) -> StreamingResponse:
    """Follow one of your jobs until it ends (state and progress changes, then the end)."""
    record = owned_record(context, producer, job_id)
    try:
        since = int(last_event_id) if last_event_id else -1
    except ValueError:
        since = -1
    stream = _events(context.producer, record.job_id, since)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _frame(event: str, event_id: int, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _events(producer: Any, job_id: str, since: int) -> Iterator[str]:
    pubsub = None
    try:
        pubsub = producer.runtime.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(job_end_channel(producer.settings.key_prefix, job_id))
    except redis.RedisError:
        pubsub = None
    deadline = time.monotonic() + MAX_STREAM_S
    last = since
    try:
        while time.monotonic() < deadline:
            record = producer.lookup(job_id)
            if record is None:
                return
            stamp = int(record.updated_at * 1000)
            if record.is_terminal:
                yield _frame("end", max(stamp, last + 1), view(record).model_dump(mode="json"))
                return
            if stamp > last:
                last = stamp
                yield _frame("job", stamp, view(record).model_dump(mode="json"))
            if pubsub is None:
                time.sleep(REREAD_S)
                continue
            try:
                pubsub.get_message(timeout=REREAD_S)
            except redis.RedisError:
                pubsub = None
    finally:
        if pubsub is not None:
            pubsub.close()
