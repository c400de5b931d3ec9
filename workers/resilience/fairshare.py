"""Fair share of the create rate between producers, priorities within one, a per-producer cap.

The API's create rate is the scarce resource and every stage is one FIFO queue, so one
producer's backlog would put every other producer's next job behind all of it. The submit
stage asks this gate (one atomic Lua script, ``fairshare.lua``) right before the rate
limiter: a job whose producer is ahead of its weighted share of creates while other
producers have jobs waiting is *deferred* — its submit message is re-sent with a short
countdown, no create is sent, no worker sleeps. Start-time fair queueing: each producer
has a virtual time (creates / weight); a producer may create while its virtual time is not
ahead of any other waiting producer's. A producer alone gets everything (work-conserving).

"Waiting" = jobs that asked the gate within ``idle_s``: every deferred job asks again
after its countdown, so a producer with a backlog stays counted, and a job that vanished
(cancelled, lost) stops counting by itself. Priorities (``high | normal | low``) are the
gate's too, not the broker's (RabbitMQ quorum queues before 4.0 have none): a producer's
normal job waits while one of its own high jobs waits; it never takes another producer's
share, because the share is per producer whatever the priority.

Cap (``NBQ_MAX_IN_FLIGHT_PER_PRODUCER``): jobs claimed for create and not yet ended; when
at the cap, the claimed jobs' records are checked and those no longer in flight dropped
(no terminal hook needed; a claim older than ``flight_ttl_s`` expires too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final

import redis

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.redis_client import tagged

if TYPE_CHECKING:
    from nanobanana_queue.workers.jobs.record import JobRecord
    from nanobanana_queue.workers.runtime import Runtime

FAIRSHARE_LUA = (
    files("nanobanana_queue.workers.resilience")
    .joinpath("fairshare.lua")
    .read_text(encoding="utf-8")
)

PRIORITIES: Final = ("high", "normal", "low")
DEFAULT_PRIORITY: Final = "normal"

#: Bounds of a deferral's countdown (seconds): long enough that a deferred backlog does
#: not spin through the workers, short enough to waste little of the create rate.
MIN_DEFER_S: Final = 0.25
MAX_DEFER_S: Final = 5.0


def rank(priority: str | None) -> int:
    """0 high, 1 normal, 2 low (unknown = normal)."""
    try:
        return PRIORITIES.index(priority or DEFAULT_PRIORITY)
    except ValueError:
        return 1


def parse_weights(text: str) -> dict[str, float]:
    """``"shop:3,batch-jobs:1"`` → ``{"shop": 3.0, "batch-jobs": 1.0}``; ``ValueError``
    naming the bad part otherwise."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.rpartition(":")
        try:
            weight = float(value)
        except ValueError:
            weight = 0.0
        if not sep or not name or weight <= 0:
            raise ValueError(f"{part!r}: expected producer:weight with a weight > 0")
        weights[name] = weight
    return weights


@dataclass(frozen=True)
class Decision:
    """The gate's answer: ``allowed``, else ``reason`` and how long to wait."""

    allowed: bool
    reason: str = ""
    wait_s: float = 0.0


@dataclass(frozen=True)
class ProducerShare:
    """One producer's line in ``nbq quota``: waiting jobs per priority, its weight and the
    share of creates that weight gives it among the producers waiting now."""

    producer: str  # '' = jobs without a producer
    waiting: dict[str, int]
    weight: float
    share: float
    in_flight: int


class FairShare:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "nbq",
        weights: dict[str, float] | None = None,
        max_in_flight: int = 0,
        creates_per_s: float = 0.0,
        idle_s: float = 30.0,
        flight_ttl_s: float = 3600.0,
        grace_s: float = 0.0,
    ) -> None:
        self.redis = client
        self.base = f"{prefix}:fair:{tagged('fair', client)}:"
        self.weights = weights or {}
        self.max_in_flight = max_in_flight
        self.creates_per_s = creates_per_s
        self.idle_s = idle_s
        self.flight_ttl_s = flight_ttl_s
        #: A job enqueued but not yet at a worker holds others back only after this. 0 (the
        #: default): at once — measured (benchmarks/fair_share.py), 1 s kept A's throughput
        #: a little higher (0.86 vs 0.79 of A alone) but let A take most creates before B's
        #: messages reached a worker (split 30 % off the weights instead of 3 %).
        self.grace_s = grace_s
        self._script = client.register_script(FAIRSHARE_LUA)

    def weight(self, producer: str | None) -> float:
        return self.weights.get(producer or "", 1.0)

    def _run(self, *args: str | int | float) -> Any:
        return self._script(keys=[self.base], args=list(args))

    def admit(
        self,
        job_id: str,
        producer: str | None,
        priority: str | None = None,
        *,
        still_in_flight: Callable[[list[str]], Iterable[str]] | None = None,
    ) -> Decision:
        """May this job create now? Allowed ones are charged a create (``refund`` if the
        create does not go out after all). ``still_in_flight(ids)`` names which of the
        producer's claimed jobs are still between claim and stored (asked only at the cap)."""
        pairs: list[str | float] = []
        for name, weight in self.weights.items():
            pairs += [name, weight]
        args = [
            "admit",
            job_id,
            producer or "",
            rank(priority),
            repr(time.time()),
            self.idle_s,
            self.max_in_flight,
            self.flight_ttl_s,
            self.grace_s,
            *pairs,
        ]
        ok, reason, lead = self._run(*args)
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        if (
            reason == "producer_in_flight"
            and still_in_flight is not None
            and self._forget_ended(producer, still_in_flight)
        ):
            ok, reason, lead = self._run(*args)
            reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        if int(ok):
            return Decision(True)
        return Decision(False, reason, self._wait_s(reason, float(lead), producer))

    def _forget_ended(
        self, producer: str | None, still_in_flight: Callable[[list[str]], Iterable[str]]
    ) -> bool:
        """Drop the producer's claims whose jobs are no longer in flight; True if any was."""
        raw = self._run("in_flight", producer or "")
        claimed = [m.decode() if isinstance(m, bytes) else str(m) for m in raw]
        ended = set(claimed) - set(still_in_flight(claimed))
        if not ended:
            return False
        self._run("forget_flight", producer or "", *sorted(ended))
        return True

    def _wait_s(self, reason: str, lead: float, producer: str | None) -> float:
        """How long a deferred job waits before asking again: about the time the others
        need to catch up at the create rate (bounded), a fixed second otherwise."""
        if reason == "fair_share" and self.creates_per_s > 0:
            creates = (lead + 1 / self.weight(producer)) * max(1.0, sum(self.weights.values()))
            return min(MAX_DEFER_S, max(MIN_DEFER_S, creates / self.creates_per_s))
        return 1.0

    def enqueued(self, job_id: str, producer: str | None, priority: str | None) -> None:
        """A new job waits from its enqueue (before its message reaches a worker).

        Best effort: the job is recorded and sent already, and its first ask registers it
        anyway; an enqueue must not fail (and be repeated as a second job) for this."""
        try:
            self._run("enqueued", job_id, producer or "", rank(priority), repr(time.time()))
        except redis.RedisError:
            return

    def enqueued_command(
        self, job_id: str, producer: str | None, priority: str | None
    ) -> list[str | int | float]:
        """``enqueued`` as one ``EVAL`` command, to ride in the enqueue's own pipeline (the
        one-round-trip enqueue stays one round trip)."""
        return [
            "EVAL",
            FAIRSHARE_LUA,
            1,
            self.base,
            "enqueued",
            job_id,
            producer or "",
            rank(priority),
            repr(time.time()),
        ]

    def refund(self, producer: str | None) -> None:
        """An admitted job did not create (the rate limiter said wait)."""
        self._run("refund", "", producer or "", self.weight(producer))

    def claimed(self, job_id: str, producer: str | None, priority: str | None) -> None:
        """The job claimed its create: no longer waiting, now in flight."""
        self._run("claimed", job_id, producer or "", rank(priority), repr(time.time()))

    def left(self, job_id: str, producer: str | None, priority: str | None) -> None:
        """The job no longer waits (it failed or was cancelled before its create)."""
        self._run("left", job_id, producer or "", rank(priority))

    def snapshot(self) -> list[ProducerShare]:
        """Each waiting producer's jobs per priority, weight, share and in-flight count."""
        raw = self._run("snapshot", repr(time.time()), self.idle_s)
        flat = [v.decode() if isinstance(v, bytes) else v for v in raw]
        per: dict[str, dict[str, int]] = {}
        flight: dict[str, int] = {}
        for i in range(0, len(flat), 5):
            producer, r, n, _vt, f = flat[i : i + 5]
            per.setdefault(str(producer), {})[PRIORITIES[int(r)]] = int(n)
            flight[str(producer)] = int(f)
        total = sum(self.weight(p) for p in per) or 1.0
        return [
            ProducerShare(
                p,
                {k: per[p][k] for k in PRIORITIES if k in per[p]},  # high first
                self.weight(p),
                self.weight(p) / total,
                flight[p],
            )
            for p in sorted(per)
        ]


def fair_gate(rt: Runtime, record: JobRecord) -> tuple[str, float] | None:
    """The submit stage's hook: ``(reason, wait_s)`` when the job must wait its turn."""
    decision = rt.fair().admit(
        record.job_id,
        record.producer,
        record.priority,
        still_in_flight=lambda ids: _in_flight(rt, ids),
    )
    label = record.producer if record.producer in rt.fair().weights else "other"
    metrics.fair_share(label or "other", "admitted" if decision.allowed else decision.reason)
    if decision.allowed:
        return None
    return decision.reason, decision.wait_s


def _in_flight(rt: Runtime, job_ids: list[str]) -> list[str]:
    """Which of these jobs are still between their create claim and stored."""
    flying = (
        JobState.SUBMITTING,
        JobState.GENERATING,
        JobState.OUTCOME_UNKNOWN,
        JobState.DOWNLOADING,
    )
    out = []
    for job_id in job_ids:
        record = rt.store.get(job_id)
        if record is not None and record.state in flying:
            out.append(job_id)
    return out
