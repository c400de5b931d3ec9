"""Worker leases: knowing within seconds that a worker is gone (issue 26).

Every worker process renews a lease in the job store — its hostname in the sorted set
``<prefix>:workers`` scored with the store's own clock (``TIME``: no skew between hosts) —
every third of ``NBQ_WORKER_LEASE_S``, from a thread of its own. A SIGKILLed or frozen
(SIGSTOPped) process stops renewing; once its score is older than the lease the
reconciler treats it as dead:

- a ``submitting`` job it had claimed (``claimed_by``) is recovered at once — its create's
  outcome is unknown, so it is held (``outcome_unknown``/adoption), never resent — instead
  of after the submit time limit;
- the Redis broker's ``unacked`` deliveries no live worker holds are put back on their
  queues (each worker publishes the delivery tags it holds, ``<prefix>:workers:held:<host>``,
  with its lease), instead of after the hour-long visibility timeout. That also frees the
  deliveries a worker lost with a broken connection (the countdown polls it held): its
  new channel does not hold them any more.

A worker missing from the set (never leased, or the store was replaced) is *unknown*,
never dead: absence is not evidence. A frozen worker that resumes finds its claim gone
and its create recorded as a task of a moved job (``created_but_job_moved``), never sent
twice; its restored deliveries are duplicates every stage already tolerates (the poll
token, the download's state check, the submit claim).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis

from nanobanana_queue.workers.logs import get_logger

log = get_logger("nbq.leases")

#: The worker (``celery -n`` hostname) this process runs tasks for; set at worker start,
#: inherited by prefork children, ``None`` outside a worker (claims then carry no owner).
_current_worker: str | None = None

_RENEW_LUA = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[1])
return 1
"""


def current_worker() -> str | None:
    """The hostname of the worker running this process's tasks, if any."""
    return _current_worker


def claim_owner() -> str:
    """``claimed_by`` for a claim's write: this worker's name ("" outside a worker, so a
    later claim never keeps an earlier worker's name)."""
    return _current_worker or ""


def set_current_worker(hostname: str | None) -> None:
    global _current_worker
    _current_worker = hostname


def registry_key(prefix: str) -> str:
    return f"{prefix}:workers"


def sweep_key(prefix: str) -> str:
    return f"{prefix}:workers:sweep_until"


def held_key(prefix: str, hostname: str) -> str:
    return f"{prefix}:workers:held:{hostname}"


class WorkerLeases:
    """The lease registry in the job store: renew (a worker), judge and forget (the
    reconciler)."""

    def __init__(self, client: redis.Redis, *, prefix: str, lease_s: float) -> None:
        self.redis = client
        self.prefix = prefix
        self.lease_s = lease_s
        self.key = registry_key(prefix)
        self._renew = client.register_script(_RENEW_LUA)

    def renew(self, hostname: str) -> None:
        self._renew(keys=[self.key], args=[hostname])

    def publish_held(self, hostname: str, tags: Iterable[str]) -> None:
        """Replace the delivery tags ``hostname`` holds (one JSON string: one write)."""
        self.redis.set(held_key(self.prefix, hostname), json.dumps(sorted(tags)))

    def server_now(self) -> float:
        seconds, micros = self.redis.time()
        return float(seconds) + micros / 1e6

    def split(self) -> tuple[set[str], set[str]]:
        """``(alive, dead)`` hostnames: dead ones renewed last more than a lease ago."""
        cutoff = self.server_now() - self.lease_s
        alive: set[str] = set()
        dead: set[str] = set()
        entries: list[Any] = list(self.redis.zrange(self.key, 0, -1, withscores=True))
        for raw, score in entries:
            host = raw.decode() if isinstance(raw, bytes) else str(raw)
            (dead if float(score) < cutoff else alive).add(host)
        return alive, dead

    def held_by(self, hostnames: Iterable[str]) -> set[str]:
        """Every delivery tag the given workers said they hold."""
        tags: set[str] = set()
        for host in hostnames:
            raw = self.redis.get(held_key(self.prefix, host))
            if raw:
                tags.update(json.loads(raw))
        return tags

    def ask_sweep(self) -> None:
        """Ask the lease passes to look for unheld ``unacked`` deliveries for the next two
        leases (a worker lost its channel, or a worker died): those deliveries are found
        once older than a lease, so the sweep must outlast one."""
        self.redis.set(sweep_key(self.prefix), repr(self.server_now() + 2 * self.lease_s))

    def sweep_wanted(self) -> bool:
        raw = self.redis.get(sweep_key(self.prefix))
        return raw is not None and float(raw) > self.server_now()

    def forget(self, hostname: str) -> None:
        """Drop a dead worker once its jobs and deliveries were recovered."""
        self.redis.zrem(self.key, hostname)
        self.redis.delete(held_key(self.prefix, hostname))


class LeaseRenewer:
    """The worker's renewing thread: daemon, so it stops exactly when the process dies or
    freezes (a warm shutdown keeps renewing while tasks finish)."""

    def __init__(self, leases: WorkerLeases, hostname: str) -> None:
        self.leases = leases
        self.hostname = hostname
        self.interval_s = leases.lease_s / 3
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._renew_once()  # leased before the first delivery
        self._thread = threading.Thread(target=self._run, name="nbq-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self._renew_once()

    def _renew_once(self) -> None:
        try:
            self.leases.renew(self.hostname)
        except redis.RedisError as exc:  # the store is down: the reconciler is blind too
            log.warning("worker_lease_renew_failed", worker=self.hostname, error=type(exc).__name__)


def held_tags(consumer: object) -> set[str]:
    """The delivery tags the consumer's channel holds now (Redis transport; else empty):
    delivered, not yet acked — reserved, running and countdown messages alike."""
    channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
    qos = getattr(channel, "qos", None)
    delivered = getattr(qos, "_delivered", None)
    if delivered is None:
        return set()
    dirty: set[Any] = getattr(qos, "_dirty", set())
    for _ in range(3):  # read on the event loop's thread; a retry covers a concurrent change
        try:
            return {str(tag) for tag in list(delivered) if tag not in dirty}
        except RuntimeError:
            continue
    return set()
