"""A test's Given: a job record as it stands at some point of its life, written directly.

The code makes a record only by a birth of the table (``queued``, ``generating`` by a
rescue, ``failed``: ``workers/jobs/lifecycle.py``, ``BIRTHS``) and changes it only by a
named transition; a test that needs a job *already* downloading, or a poll due long ago,
writes that state here instead of walking the job there. The record is written as
``create.lua`` writes one (its hash, its state's index, the state counter, a TTL once
ended), without the birth check, so every reader sees an ordinary record.
"""

from __future__ import annotations

import time
from typing import Any

from nanobanana_queue.workers.jobs.record import JobRecord, encode_field
from nanobanana_queue.workers.jobs.store import JobStore, _jsonable


def seed(store: JobStore, record: JobRecord) -> JobRecord:
    """Write ``record`` (stamped as a create stamps it) in any state; returns it."""
    now = time.time()
    stamped = record.model_copy(
        update={
            "created_at": record.created_at or now,
            "updated_at": now,
            "state_times": {record.state.value: now},
        }
    )
    key = store.key(stamped.job_id)
    pipe = store.redis.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping=stamped.to_hash())  # type: ignore[arg-type]
    pipe.hincrby(store.counter_key(stamped.job_id), f'["{stamped.state.value}"]', 1)
    if stamped.state.is_terminal:
        pipe.expire(key, store.retention_s)
    else:
        pipe.zadd(store.index_key(stamped.state, stamped.job_id), {stamped.job_id: now})
    pipe.execute()
    return stamped


def set_fields(store: JobStore, job_id: str, **fields: Any) -> None:
    """Change a stored record's fields as a test's Given (e.g. a poll due long ago)."""
    assert store.redis.exists(store.key(job_id)), f"no record {job_id}"
    store.redis.hset(
        store.key(job_id),
        mapping={name: encode_field(name, _jsonable(value)) for name, value in fields.items()},
    )
