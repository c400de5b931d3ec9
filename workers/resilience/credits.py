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
        pipe = self.redis.pipeline()
        for key in {self._key(day), self._key(day, producer) if producer else self._key(day)}:
            pipe.incrbyfloat(key, credits)
            pipe.expire(key, 8 * 24 * 3600)
        pipe.execute()

    def _ended_key(self, day: str) -> str:
        return f"{self.prefix}:credits:{day}:ended"

    def record_ended(self, state: str, credits: float) -> None:
        """A job holding ``credits`` ended ``failed`` or ``cancelled`` (its spend is sunk)."""
        if credits <= 0:
            return
        key = self._ended_key(_day())
        pipe = self.redis.pipeline()
        pipe.hincrbyfloat(key, state, credits)
        pipe.expire(key, 8 * 24 * 3600)
        pipe.execute()

    def record_unknown(self) -> None:
        """A create whose outcome is unknown: it may have been charged (amount unknown)."""
        key = self._ended_key(_day())
        pipe = self.redis.pipeline()
        pipe.hincrby(key, "unknown_creates", 1)
        pipe.expire(key, 8 * 24 * 3600)
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
