"""The submissions breaker, shared by every worker through Redis.

A 402 (out of credits) or 401 (key rejected) on a create trips it: submissions pause,
queued jobs wait (re-scheduled with a countdown, never failed) while polls and downloads
of tasks that already exist go on. A probe — a single real create, won by one worker
through an atomic check — tests whether credits are back and closes it.

The probes start short and back off: the first comes ``FIRST_PROBE_S`` after the trip,
each answer that the credits are still gone doubles the wait, up to
``NBQ_BREAKER_PROBE_INTERVAL_S`` (5, 10, 20, 40, 60 s by default). Credits topped up a
minute into an outage are found within seconds, not a full interval later. A probe that
learnt nothing (its create timed out, or the API answered 429/5xx) is followed by the
next probe at once, not an interval later, and does not lengthen the back-off
(``probe_inconclusive``). Daily-limit codes
wait for the next UTC midnight before probing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

from nanobanana_queue.workers import metrics

#: The wait before the first probe after a trip (capped at the probe interval).
FIRST_PROBE_S = 5.0

#: ``may_submit``'s "read the state here" (a caller may pass what it read: None = absent).
_UNREAD = object()

# Winning a probe moves ``next_probe_at`` by the current back-off step (ARGV[2]): the
# probe's own answer then sets the next one (``trip`` again, or ``probe_inconclusive``).
_PROBE_LUA = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'open' then return 1 end
local next_probe = tonumber(redis.call('HGET', KEYS[1], 'next_probe_at') or '0')
local now = tonumber(ARGV[1])
if now < next_probe then return 0 end
redis.call('HSET', KEYS[1], 'next_probe_at', tostring(now + tonumber(ARGV[2])))
redis.call('HSET', KEYS[1], 'last_probe_at', tostring(now))
redis.call('HINCRBY', KEYS[1], 'probes', 1)
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
    #: Probes won since this trip (each doubles the wait before the next).
    probes: int = 0

    @property
    def is_open(self) -> bool:
        return self.state == "open"


class SubmissionBreaker:
    """Breaker state in the hash ``<prefix>:breaker:quota``."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "nbq",
        probe_interval_s: float = 60,
        clock: Callable[[], float] = time.time,
    ):
        self.redis = client
        #: Wall-clock seconds (probe times are shared by every host); tests step it.
        self.clock = clock
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
            probes=int(raw.get("probes", "0")),
        )

    def probe_wait_s(self, probes: int) -> float:
        """The wait after ``probes`` probes that found no credits: ``FIRST_PROBE_S``
        doubling, capped at the probe interval."""
        return float(min(FIRST_PROBE_S * 2 ** min(probes, 32), self.probe_interval_s))

    def trip(self, *, kind: str, code: str | None, message: str, daily: bool = False) -> None:
        """Open (or keep open) the breaker; the next probe waits the back-off step (see the
        module's docstring) or till midnight."""
        now = self.clock()
        was_open = self.redis.hget(self.key, "state") == b"open"
        probes = int(self.redis.hget(self.key, "probes") or 0) if was_open else 0
        wait_s = seconds_to_utc_midnight(now) if daily else self.probe_wait_s(probes)
        pipe = self.redis.pipeline()
        pipe.hsetnx(self.key, "since", repr(now))
        if not was_open:
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

    def may_submit(self, *, state: object = _UNREAD) -> tuple[bool, float]:
        """``(True, 0)`` when closed or when this caller won the probe; else the wait.

        ``state``: the hash's ``state`` field as the caller just read it (with other gate
        reads in one round trip: ``gate_read``); else it is read here."""
        now = self.clock()
        # Closed (nearly always): one HGET. Only an open breaker needs the script, whose
        # atomic check lets exactly one caller win each probe.
        if state is _UNREAD:
            state = self.redis.hget(self.key, "state")
        if not isinstance(state, bytes | str) or _text(state) != "open":
            self._local.probe = False
            return True, 0.0
        step_s = self.probe_wait_s(int(self.redis.hget(self.key, "probes") or 0))
        result = int(self._probe(keys=[self.key], args=[repr(now), step_s]))
        self._local.probe = result == 2
        if result:
            return True, 0.0
        status = self.status()
        wait_s = (status.next_probe_at or now) - now
        return False, max(wait_s, 0.0)

    def gate_read(self) -> tuple[str, str, str]:
        """The command ``may_submit(state=...)`` needs, for a caller's pipeline."""
        return ("HGET", self.key, "state")

    def probe_inconclusive(self) -> None:
        """This thread's probe learnt nothing about the credits (the create's outcome is
        unknown, or a 429/5xx said nothing about them): the next submit probes again at
        once rather than a back-off step later. A no-op for a non-probe create."""
        if not self.last_was_probe:
            return
        self._local.probe = False
        if self.redis.hget(self.key, "state") == b"open":
            # Nor does it count towards the back-off: only answers that the credits are
            # still gone double the wait (a 5xx storm must not push the probes to the
            # interval while credits come back).
            pipe = self.redis.pipeline()
            pipe.hset(self.key, "next_probe_at", repr(self.clock()))
            pipe.hincrby(self.key, "probes", -1)
            pipe.execute()

    def close(self) -> bool:
        """Close after a successful create (or by hand). True if it was open."""
        was_open = self.redis.hget(self.key, "state") == b"open"
        if was_open:
            self.redis.hset(self.key, mapping={"state": "closed", "closed_at": repr(self.clock())})
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
