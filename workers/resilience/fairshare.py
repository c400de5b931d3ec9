"""Fair share of the create rate between producers, priorities within one, a per-producer cap.

The API's create rate is the scarce resource and every stage is one FIFO queue, so one
producer's backlog would put every other producer's next job behind all of it. So a new
job does not wait in the broker's queue only: its enqueue also puts it on its producer's
waiting list in Redis (one sorted set per producer and priority, ``fairshare.lua``), and
a submit message is a *create slot*, not a job: when the rate limiter grants a create,
the submit stage takes the fairest waiting job (start-time fair queueing over the
producers' weights, ``NBQ_PRODUCER_WEIGHTS``; high before normal before low within a
producer) and creates that one — whichever job its own message was for. The job it was
sent for stays on its list and is taken by a later slot; the taken job's own message,
when it comes, is a slot for somebody else. Every granted create goes to some waiting
job (work-conserving: a producer alone gets everything, in its own FIFO order) and no
message is deferred for fairness (no re-sends, no sleeping worker).

A taken job is *leased* until its claim (``queued → submitting``, one winner) lands; a
worker SIGKILLed in between leaves a lease that goes back to its place in line after
``lease_s`` (of Redis's clock): a take looks for expired leases every ``HEAL_EVERY_S``
of its process and whenever it finds nothing else to take. The claim and the idempotency
key keep any job to one create. A taken job that is not created (no longer queued, lost
its claim, put back) gives its producer the charge back; a job cancelled or failed while
waiting leaves its list (``left``). A job that is queued but on no list (a retry's re-send, a job
enqueued before the lists existed) is submitted as it is (``direct``).

Cap (``NBQ_MAX_IN_FLIGHT_PER_PRODUCER``): jobs claimed for create and not yet ended; a
producer at its cap is skipped by the pick; when every waiting producer is, the claimed
jobs' records are checked and those no longer in flight dropped (no terminal hook
needed; a claim older than ``flight_ttl_s`` expires too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.resources import files
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

import redis

from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.redis_client import tagged

if TYPE_CHECKING:
    from nanobanana_queue.workers.runtime import Runtime

FAIRSHARE_LUA = (
    files("nanobanana_queue.workers.resilience")
    .joinpath("fairshare.lua")
    .read_text(encoding="utf-8")
)
#: The enqueue's part alone: its text rides in every enqueue's pipeline (``EVAL``).
ENQUEUE_LUA = (
    files("nanobanana_queue.workers.resilience")
    .joinpath("fairshare_enqueue.lua")
    .read_text(encoding="utf-8")
)

log = get_logger("nbq.fairshare")

PRIORITIES: Final = ("high", "normal", "low")
DEFAULT_PRIORITY: Final = "normal"

#: A submit slot waits this long when every waiting producer is at its in-flight cap.
CAPPED_WAIT_S: Final = 1.0
#: A picked job not claimed within this is put back in line (its picker died).
LEASE_S: Final = 30.0
#: A process's takes look for expired leases at most this often (and whenever nothing
#: else is waiting): one read of the leases, not one per take.
HEAL_EVERY_S: Final = 5.0


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
class ProducerShare:
    """One producer's line in ``nbq quota``: waiting jobs per priority, its weight and the
    share of creates that weight gives it among the producers waiting now."""

    producer: str  # '' = jobs without a producer
    waiting: dict[str, int]
    weight: float
    share: float
    in_flight: int


@dataclass(frozen=True)
class Take:
    """What a submit slot got: ``direct`` (submit the message's own job as it is),
    ``pick`` (this leased ``job_id`` of ``producer``), or ``none`` (``reason`` empty |
    capped)."""

    kind: str
    job_id: str = ""
    producer: str | None = None
    priority: str = DEFAULT_PRIORITY
    reason: str = ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FairShare:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "nbq",
        weights: dict[str, float] | None = None,
        max_in_flight: int = 0,
        lease_s: float = LEASE_S,
        flight_ttl_s: float = 3600.0,
        heal_every_s: float = HEAL_EVERY_S,
    ) -> None:
        self.redis = client
        self.base = f"{prefix}:fair:{tagged('fair', client)}:"
        #: The keys every call declares (fairshare.lua's header): the prefix, then the
        #: fixed keys; a producer's own keys are derived from the prefix in the same slot.
        self.keys = [self.base, self.base + "ready", self.base + "finish", self.base + "taken"]
        self.weights = weights or {}
        self.max_in_flight = max_in_flight
        self.lease_s = lease_s
        self.flight_ttl_s = flight_ttl_s
        self.heal_every_s = heal_every_s
        self._heal_due = 0.0  # monotonic: this process's next look for expired leases
        self._script = client.register_script(FAIRSHARE_LUA)
        self._enqueue = client.register_script(ENQUEUE_LUA)

    def weight(self, producer: str | None) -> float:
        return self.weights.get(producer or "", 1.0)

    def label(self, producer: str | None) -> str:
        """A bounded metric label: a configured producer's name, else ``other``."""
        return producer if producer and producer in self.weights else "other"

    def _run(self, *args: str | int | float) -> Any:
        return self._script(keys=self.keys, args=list(args))

    def enqueued(self, job_id: str, producer: str | None, priority: str | None) -> None:
        """A new job waits on its producer's list from its enqueue.

        Best effort: the job is recorded and sent already; a job on no list is submitted
        directly when its message comes (no fairness for it, nothing lost). An enqueue
        must not fail (and be repeated as a second job) for this."""
        try:
            self._enqueue(keys=self.keys, args=self._enqueued_args(job_id, producer, priority))
        except redis.RedisError:
            return

    def enqueued_command(
        self, job_id: str, producer: str | None, priority: str | None
    ) -> list[str | int | float]:
        """``enqueued`` as one ``EVAL`` command, to ride in the enqueue's own pipeline (the
        one-round-trip enqueue stays one round trip)."""
        return [
            "EVAL",
            ENQUEUE_LUA,
            len(self.keys),
            *self.keys,
            *self._enqueued_args(job_id, producer, priority),
        ]

    def _enqueued_args(
        self, job_id: str, producer: str | None, priority: str | None
    ) -> list[str | int | float]:
        return [
            job_id,
            producer or "",
            rank(priority),
            repr(time.time()),
            self.max_in_flight,
            *self._pairs(),
        ]

    def _pairs(self) -> list[str | float]:
        """The configured weights as script arguments: producer, weight, ..."""
        pairs: list[str | float] = []
        for name, weight in self.weights.items():
            pairs += [name, weight]
        return pairs

    def take(
        self,
        job_id: str,
        producer: str | None,
        priority: str | None,
        *,
        queued: bool,
        still_in_flight: Callable[[list[str]], Iterable[str]] | None = None,
    ) -> Take:
        """A submit slot (the message of ``job_id``, ``queued`` or not any more) takes the
        fairest waiting job. ``still_in_flight(ids)`` names which of a producer's claimed
        jobs are still between claim and stored (asked only when all are at the cap)."""
        args = [
            "take",
            job_id,
            producer or "",
            1 if queued else 0,
            self.lease_s,
            1 if self._heal_now() else 0,
            self.max_in_flight,
            self.flight_ttl_s,
            *self._pairs(),
        ]
        raw = [_text(v) for v in self._run(*args)]
        if (
            raw[:2] == ["none", "capped"]
            and still_in_flight is not None
            # Every capped producer is checked (a list, not ``any``: stopping at the first
            # that freed a slot forgot the others' ended jobs, and the same one won again).
            and any([self._forget_ended(p, still_in_flight) for p in raw[2:]])
        ):
            raw = [_text(v) for v in self._run(*args)]
        if raw[0] == "pick":
            return Take("pick", raw[1], raw[2] or None, PRIORITIES[int(raw[3])])
        if raw[0] == "none":
            return Take("none", reason=raw[1])
        return Take("direct", job_id, producer, priority or DEFAULT_PRIORITY)

    def _heal_now(self) -> bool:
        """Whether this take also looks for expired leases (every ``heal_every_s``)."""
        due = monotonic()
        if due < self._heal_due:
            return False
        self._heal_due = due + self.heal_every_s
        return True

    def anything_listed(self) -> bool:
        """Whether any producer may have a job listed (one ``ZCARD``; a producer whose list
        emptied since leaves at the next take that reaches it)."""
        return bool(self.redis.zcard(self.base + "ready"))

    def _forget_ended(
        self, producer: str, still_in_flight: Callable[[list[str]], Iterable[str]]
    ) -> bool:
        """Drop the producer's claims whose jobs are no longer in flight; True if any was."""
        claimed = [_text(m) for m in self._run("in_flight", producer)]
        ended = set(claimed) - set(still_in_flight(claimed))
        if not ended:
            return False
        self._run("forget_flight", producer, *sorted(ended))
        return True

    def claimed(self, job_id: str, producer: str | None) -> None:
        """The job claimed its create: no longer leased; in flight under a cap. Without a
        cap that is one ``HDEL`` of its lease (fairshare.lua's layout), no script."""
        if self.max_in_flight <= 0:
            self.redis.hdel(self.base + "taken", job_id)
            return
        self._run("claimed", job_id, producer or "", self.max_in_flight)

    def release(self, job_id: str) -> None:
        """A taken job that will not be created by this take (not queued any more, lost its
        claim, over budget): forgotten, and its producer given the charge back."""
        self._run("release", job_id)

    def put_back(self, job_id: str) -> None:
        """A taken job that may not create yet (the limiter said wait): back in line."""
        self._run("put_back", job_id)

    def left(self, job_id: str, producer: str | None) -> None:
        """The job ended (failed, cancelled): off its list, its lease (the charge given
        back) and its in-flight entry dropped. Best effort: the job's end is written
        already; an entry left behind is dropped (and refunded) when a take finds the job
        no longer queued."""
        try:
            self._run("left", job_id, producer or "")
        except redis.RedisError as exc:
            log.warning("fair_share_left_unrecorded", job_id=job_id, error=type(exc).__name__)

    def migrate(self) -> int:
        """The lists of the layout before this one moved into this one (once: a worker's
        first use; a few commands when there is nothing to move). Returns the jobs moved.
        Best effort: a job left on an old list is still queued, so its own message (or the
        reconciler's re-send) submits it directly."""
        try:
            return int(self._run("migrate"))
        except redis.RedisError as exc:
            log.warning("fair_share_migrate_failed", error=type(exc).__name__)
            return 0

    def snapshot(self) -> list[ProducerShare]:
        """Each waiting producer's jobs per priority, weight, share and in-flight count."""
        flat = [_text(v) for v in self._run("snapshot")]
        per: dict[str, dict[str, int]] = {}
        flight: dict[str, int] = {}
        for i in range(0, len(flat), 4):
            producer, r, n, f = flat[i : i + 4]
            per.setdefault(producer, {})[PRIORITIES[int(r)]] = int(n)
            flight[producer] = int(f)
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


def in_flight(rt: Runtime, job_ids: list[str]) -> list[str]:
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


def in_flight_text(fair: FairShare, in_flight: int, separator: str) -> str:
    """A producer's jobs in flight, for a person: counted only under a per-producer cap
    (``NBQ_MAX_IN_FLIGHT_PER_PRODUCER``; without one nothing keeps the count), so shown
    only then."""
    if fair.max_in_flight <= 0:
        return ""
    return f"{separator}in flight {in_flight} of {fair.max_in_flight}"
