"""Batch membership in Redis: ``<prefix>:batch:<id>`` (a set of job ids) and its owner.

Kept as long as job records (``NBQ_JOB_RETENTION_S``); the counts are read from the job
records themselves, so a batch never disagrees with its jobs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import redis

from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.jobs.store import JobStore


class BatchStore:
    def __init__(
        self, client: redis.Redis, store: JobStore, *, prefix: str, retention_s: int
    ) -> None:
        self.client = client
        self.store = store
        self.prefix = prefix
        self.retention_s = retention_s

    def key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def owner_key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch-owner:{batch_id}"

    def claim(self, batch_id: str, producer: str) -> bool:
        """True if the batch is new or already this producer's."""
        key = self.owner_key(batch_id)
        self.client.set(key, producer, nx=True, ex=self.retention_s)
        owner = self.client.get(key)
        return owner is not None and _text(owner) == producer

    def owner(self, batch_id: str) -> str | None:
        owner = self.client.get(self.owner_key(batch_id))
        return _text(owner) if owner is not None else None

    def add(self, batch_id: str, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        if not ids:
            return
        key = self.key(batch_id)
        pipe = self.client.pipeline()
        pipe.sadd(key, *ids)
        pipe.expire(key, self.retention_s)
        pipe.execute()

    def job_ids(self, batch_id: str) -> list[str]:
        members = self.client.smembers(self.key(batch_id))
        return sorted(_text(m) for m in members)

    def counts(self, job_ids: list[str]) -> Counter[str]:
        """Jobs by state (``expired`` for records past retention)."""
        pipe = self.client.pipeline(transaction=False)  # reads only; any slots on a cluster
        for job_id in job_ids:
            pipe.hget(self.store.key(job_id), "state")
        states = pipe.execute()
        counts: Counter[str] = Counter()
        for state in states:
            counts[_text(state) if state is not None else "expired"] += 1
        return counts


def done_count(counts: Counter[str]) -> int:
    finals = {s.value for s in JobState if s.is_terminal} | {"expired"}
    return sum(n for state, n in counts.items() if state in finals)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
