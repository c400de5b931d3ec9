"""The submissions breaker, shared by every worker through Redis.

A 402 (out of credits) or 401 (key rejected) on a create trips it: submissions pause,
queued jobs wait (re-scheduled with a countdown, never failed) while polls and downloads
of tasks that already exist go on. One probe per interval — a single real create, won by
one worker through an atomic check — tests whether credits are back and closes it.
Daily-limit codes wait for the next UTC midnight before probing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from workers import metrics

_PROBE_LUA = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'open' then return 1 end
local next_probe = tonumber(redis.call('HGET', KEYS[1], 'next_probe_at') or '0')
local now = tonumber(ARGV[1])
if now < next_probe then return 0 end
redis.call('HSET', KEYS[1], 'next_probe_at', tostring(now + tonumber(ARGV[2])))
redis.call('HSET', KEYS[1], 'last_probe_at', tostring(now))
return 2
"""


@dataclass(frozen=True)
class BreakerStatus:
    state: str  # "open" | "closed"
    kind: str | None = None  # "quota" | "unauthorized"
    since: float | None = None
    code: str | None = None
    message: str | None = None
    next_probe_at: float | None = None
    trips: int = 0

    @property
    def is_open(self) -> bool:
        return self.state == "open"


class SubmissionBreaker:
    """Breaker state in the hash ``<prefix>:breaker:quota``."""

    def __init__(self, client: redis.Redis, *, prefix: str = "nbq", probe_interval_s: float = 60):
        self.redis = client
        self.key = breaker_key(prefix)
        self.probe_interval_s = probe_interval_s
        self._probe = client.register_script(_PROBE_LUA)
        self._local = threading.local()

    @property
    def last_was_probe(self) -> bool:
        """Whether this thread's last ``may_submit`` won a probe of an open breaker (so its
        successful create must close it) — saves a Redis read after every other create."""
        return bool(getattr(self._local, "probe", False))

    def status(self) -> BreakerStatus:
        raw = {_text(k): _text(v) for k, v in self.redis.hgetall(self.key).items()}
        if not raw:
            return BreakerStatus(state="closed")
        return BreakerStatus(
            state=raw.get("state", "closed"),
            kind=raw.get("kind"),
            since=float(raw["since"]) if "since" in raw else None,
            code=raw.get("code"),
            message=raw.get("message"),
            next_probe_at=float(raw["next_probe_at"]) if "next_probe_at" in raw else None,
            trips=int(raw.get("trips", "0")),
        )

    def trip(self, *, kind: str, code: str | None, message: str, daily: bool = False) -> None:
        """Open (or keep open) the breaker; the next probe waits an interval or till midnight."""
        now = time.time()
        wait_s = seconds_to_utc_midnight(now) if daily else self.probe_interval_s
        pipe = self.redis.pipeline()
        pipe.hsetnx(self.key, "since", repr(now))
        if self.redis.hget(self.key, "state") != b"open":
            pipe.delete(self.key)
            pipe.hset(self.key, "since", repr(now))
            pipe.hincrby(self.key, "trips", 1)
        pipe.hset(
            self.key,
            mapping={
                "state": "open",
                "kind": kind,
                "code": code or "",
                "message": message[:500],
                "next_probe_at": repr(now + wait_s),
            },
        )
        pipe.execute()
        metrics.quota_breaker(True)

    def may_submit(self) -> tuple[bool, float]:
        """``(True, 0)`` when closed or when this caller won the probe; else the wait."""
        now = time.time()
        # Closed (nearly always): one HGET. Only an open breaker needs the script, whose
        # atomic check lets exactly one caller win each probe.
        state = self.redis.hget(self.key, "state")
        if state is None or _text(state) != "open":
            self._local.probe = False
            return True, 0.0
        result = int(self._probe(keys=[self.key], args=[repr(now), self.probe_interval_s]))
        self._local.probe = result == 2
        if result:
            return True, 0.0
        status = self.status()
        wait_s = (status.next_probe_at or now) - now
        return False, max(wait_s, 0.0)

    def close(self) -> bool:
        """Close after a successful create (or by hand). True if it was open."""
        was_open = self.redis.hget(self.key, "state") == b"open"
        if was_open:
            self.redis.hset(self.key, mapping={"state": "closed", "closed_at": repr(time.time())})
            metrics.quota_breaker(False)
        return was_open


def breaker_key(prefix: str) -> str:
    """``<prefix>:breaker:quota`` (one key: any slot will do, also on a cluster)."""
    return f"{prefix}:breaker:quota"


def seconds_to_utc_midnight(now: float) -> float:
    current = datetime.fromtimestamp(now, tz=UTC)
    midnight = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - current).total_seconds() + 5.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
