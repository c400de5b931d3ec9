"""Credit budget: today's spend (UTC day) from ``usage.credits_reserved`` of every create.

Spend counts every task the API accepted, whatever became of its job; the credits of jobs
that then ended ``failed`` or ``cancelled`` are also counted apart (``ended_today``), and so
are creates whose outcome stayed unknown (possibly charged, amount unknown).

With NBQ_CREDIT_LIMIT_DAILY set, producers refuse a request at enqueue when today's spend
plus the request's estimated price would exceed it — a clear error, never a silent drop.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis

from workers.redis_client import tagged

#: Estimated credits per create by quality, used only to refuse at enqueue; the real
#: figure recorded on each job is the API's own ``usage.credits_reserved``.
ESTIMATED_CREDITS = {"1K": 1.6, "2K": 2.5, "4K": 5.0}

#: Day keys outlive the 7-day spend report by a day.
DAY_TTL_S = 8 * 24 * 3600

#: How often one process sets a day key's TTL again: once is enough (``record`` sets it
#: on first use); the refresh only covers a key re-created without it (a store reset).
EXPIRE_EVERY_S = 600.0

# (client, key) -> monotonic time this process last set the key's TTL. Process-wide: the
# stages build a ledger per call. INCRBYFLOAT + EXPIRE on every create was 2 of the
# ledger's 6 commands per job; a Lua script doing both crashed the redis-server 6.2.14
# the tests run (heap corruption under load), so: plain MULTI, EXPIRE now and then.
_ttl_set_at: dict[tuple[int, str], float] = {}


def _day(now: float | None = None) -> str:
    return datetime.fromtimestamp(now or time.time(), tz=UTC).strftime("%Y-%m-%d")


class CreditLedger:
    def __init__(self, client: redis.Redis, *, prefix: str = "nbq") -> None:
        self.redis = client
        self.prefix = prefix

    def _key(self, day: str, producer: str | None = None) -> str:
        suffix = f":{producer}" if producer else ""
        # One hash tag per day on a cluster: ``record`` updates both keys in one MULTI.
        return f"{self.prefix}:credits:{tagged(day, self.redis)}{suffix}"

    def record(self, credits: float, *, producer: str | None = None) -> None:
        day = _day()
        keys = [self._key(day)] + ([self._key(day, producer)] if producer else [])
        now = time.monotonic()
        stale = [
            key
            for key in keys
            if now - _ttl_set_at.get((id(self.redis), key), -EXPIRE_EVERY_S) >= EXPIRE_EVERY_S
        ]
        pipe = self.redis.pipeline()
        for key in keys:
            pipe.incrbyfloat(key, credits)
            if key in stale:
                pipe.expire(key, DAY_TTL_S)
        pipe.execute()
        if len(_ttl_set_at) > 10_000:  # clients x producers x days: keep it bounded
            _ttl_set_at.clear()
        for key in stale:
            _ttl_set_at[(id(self.redis), key)] = now

    def _ended_key(self, day: str) -> str:
        return f"{self.prefix}:credits:{day}:ended"

    def record_ended(self, state: str, credits: float) -> None:
        """A job holding ``credits`` ended ``failed`` or ``cancelled`` (its spend is sunk)."""
        if credits <= 0:
            return
        key = self._ended_key(_day())
        pipe = self.redis.pipeline()
        pipe.hincrbyfloat(key, state, credits)
        pipe.expire(key, DAY_TTL_S)
        pipe.execute()

    def record_unknown(self) -> None:
        """A create whose outcome is unknown: it may have been charged (amount unknown)."""
        key = self._ended_key(_day())
        pipe = self.redis.pipeline()
        pipe.hincrby(key, "unknown_creates", 1)
        pipe.expire(key, DAY_TTL_S)
        pipe.execute()

    def ended_today(self) -> dict[str, float]:
        """``{"failed": credits, "cancelled": credits, "unknown_creates": count}`` today."""
        raw = self.redis.hgetall(self._ended_key(_day()))
        out = {"failed": 0.0, "cancelled": 0.0, "unknown_creates": 0.0}
        for name, value in raw.items():
            key = name.decode() if isinstance(name, bytes) else str(name)
            out[key] = float(value)
        return out

    def spent_today(self, *, producer: str | None = None) -> float:
        value = self.redis.get(self._key(_day(), producer))
        return float(value) if value else 0.0

    def would_exceed(self, quality: str, limit: float, *, producer: str | None = None) -> bool:
        if limit <= 0:
            return False
        estimate = ESTIMATED_CREDITS.get(quality, max(ESTIMATED_CREDITS.values()))
        return self.spent_today(producer=producer) + estimate > limit
