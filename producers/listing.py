"""List jobs for ``nbq jobs``: the per-state indexes for active states, a bounded scan
of job records for the ended ones (stored, failed, cancelled have no index).

Newest first. Filters (producer, batch) are applied to the records read; a batch id
reads its membership set (``<prefix>:batch:<id>``, written by the HTTP ingress) first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, JobState
from nanobanana_queue.workers.jobs.store import JobStore

#: At most this many job keys are scanned for ended jobs (a listing, not an export).
MAX_SCANNED = 20_000


def list_jobs(
    store: JobStore,
    *,
    state: JobState | None = None,
    producer: str | None = None,
    batch_id: str | None = None,
    limit: int = 20,
) -> list[JobRecord]:
    """Up to ``limit`` matching jobs, most recently updated first."""
    if batch_id is not None:
        candidates: Iterable[str] = _batch_members(store, batch_id)
    elif state is not None and state in ACTIVE_STATES:
        candidates = _indexed(store, state, MAX_SCANNED)
    else:
        candidates = _scanned(store)
    found: list[JobRecord] = []
    for chunk in _chunks(candidates, 200):
        for record in _read(store, chunk):
            if state is not None and record.state is not state:
                continue
            if producer is not None and record.producer != producer:
                continue
            if batch_id is not None and record.batch_id not in (None, batch_id):
                continue
            found.append(record)
        if state is not None and state in ACTIVE_STATES and len(found) >= limit:
            break  # the index is newest first: enough read
    found.sort(key=lambda r: r.updated_at, reverse=True)
    return found[:limit]


def _indexed(store: JobStore, state: JobState, limit: int) -> list[str]:
    """Newest first across the state's indexes (one per shard on a cluster store)."""
    pipe = store.redis.pipeline(transaction=False)
    for key in store.index_keys(state):
        pipe.zrevrange(key, 0, limit - 1, withscores=True)
    scored: list[Any] = [pair for reply in pipe.execute() for pair in reply]
    scored.sort(key=lambda pair: float(pair[1]), reverse=True)
    return [_text(i) for i, _ in scored[:limit]]


def _batch_members(store: JobStore, batch_id: str) -> list[str]:
    return sorted(_text(i) for i in store.redis.smembers(f"{store.prefix}:batch:{batch_id}"))


def _scanned(store: JobStore) -> Iterator[str]:
    # One Redis: ``nbq:job:<id>``; a sharded cluster store: ``nbq:{s<n>}:job:<id>``.
    match = f"{store.prefix}:{{s*}}:job:*" if store.shards else f"{store.key('')}*"
    for n, key in enumerate(store.redis.scan_iter(match=match, count=1000)):
        if n >= MAX_SCANNED:
            return
        yield _text(key).split(":job:", 1)[1]


def _read(store: JobStore, job_ids: list[str]) -> list[JobRecord]:
    pipe = store.redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hgetall(store.key(job_id))
    records = []
    for raw in pipe.execute():
        if raw:
            records.append(JobRecord.from_hash({_text(k): _text(v) for k, v in raw.items()}))
    return records


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: ``GET /v1/jobs``: at most this many index entries are read per page (filters that
#: match rarely return a short page with a cursor; the next page goes on from there).
MAX_EXAMINED_PER_PAGE = 5000


def page_jobs(
    store: JobStore,
    producer: str,
    *,
    state: JobState | None = None,
    batch_id: str | None = None,
    limit: int = 100,
    cursor: tuple[float, str] | None = None,
) -> tuple[list[JobRecord], tuple[float, str] | None]:
    """One page of ``producer``'s jobs, newest first (by creation), and the next cursor.

    The order is (created_at, job id) descending, so a cursor (the last entry examined)
    stays valid while jobs are enqueued (they are newer: before any cursor): no
    duplicates, no gaps. Only the producer's own index is read, and every record is
    checked to be the producer's. ``None`` as the next cursor: the end.
    """
    key = store.producer_index_key(producer)
    found: list[JobRecord] = []
    examined = 0
    high = "+inf" if cursor is None else repr(cursor[0])
    while len(found) < limit and examined < MAX_EXAMINED_PER_PAGE:
        ties = 0 if cursor is None else int(store.redis.zcount(key, high, high))
        want = min(limit - len(found), MAX_EXAMINED_PER_PAGE - examined)
        scored: list[Any] = list(
            store.redis.zrevrangebyscore(
                key, high, "-inf", start=0, num=want + ties, withscores=True
            )
        )
        entries = [(float(pair[1]), _text(pair[0])) for pair in scored]
        if cursor is not None:
            entries = [e for e in entries if (e[0], e[1]) < cursor]
        entries = entries[:want]
        if not entries:
            return found, None
        examined += len(entries)
        cursor = entries[-1]
        high = repr(cursor[0])
        for record in _read(store, [job_id for _, job_id in entries]):
            if record.producer != producer:
                continue
            if state is not None and record.state is not state:
                continue
            if batch_id is not None and record.batch_id != batch_id:
                continue
            found.append(record)
        if len(entries) < want:
            return found, None
    return found, cursor
