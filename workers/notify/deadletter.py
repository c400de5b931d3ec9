"""Deliveries that ran out of tries: kept in Redis for ``nbq notify list|replay``.

One hash ``<prefix>:notify:dead`` (field = webhook id, value = the delivery as JSON plus
its last outcome) and a sorted set ``<prefix>:notify:dead:at`` (by the time it died) for
listing newest first. A replay sends the same webhook id and body again (a fresh retry
period), and removes the entry once sent. Both keys share one hash tag: a Cluster store
keeps them in one slot. Entries carry no secret (the body is the job's public view).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import redis

from nanobanana_queue.workers.stages.steps import Notify


class NotifyDeadLetters:
    def __init__(self, client: redis.Redis, *, prefix: str = "nbq") -> None:
        self.redis = client
        self.key = f"{prefix}:{{notify}}:dead"
        self.index = f"{prefix}:{{notify}}:dead:at"

    def add(self, step: Notify, *, reason: str, status: int | None) -> None:
        entry = {**asdict(step), "reason": reason, "status": status, "dead_at": time.time()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, step.webhook_id, json.dumps(entry, sort_keys=True))
        pipe.zadd(self.index, {step.webhook_id: entry["dead_at"]})
        pipe.execute()

    def list(self, *, limit: int = 100) -> list[dict[str, Any]]:
        raw_ids: list[Any] = list(self.redis.zrevrange(self.index, 0, limit - 1))
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw_ids]
        if not ids:
            return []
        raw = self.redis.hmget(self.key, ids)
        return [json.loads(v) for v in raw if v is not None]

    def take(self, webhook_id: str) -> Notify | None:
        """The dead delivery as a fresh first try (same id and body), or None."""
        raw = self.redis.hget(self.key, webhook_id)
        if raw is None:
            return None
        entry = json.loads(raw)
        fields = {k: entry[k] for k in ("webhook_id", "job_id", "event", "url", "payload")}
        return Notify(**fields, first_at=time.time())

    def remove(self, webhook_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.key, webhook_id)
        pipe.zrem(self.index, webhook_id)
        pipe.execute()
