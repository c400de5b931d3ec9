"""Is the job store durable, and is it still the store we wrote to?

Two checks, both cheap:

* ``check_persistence`` (once, at start): ``CONFIG GET appendonly / save /
  maxmemory-policy`` in one round trip. A store that keeps nothing across a restart, or
  one that evicts keys, loses paid results silently, so it is refused
  (:class:`VolatileStoreError`) unless ``NBQ_ALLOW_VOLATILE_STORE=true``. Where ``CONFIG``
  is disabled (managed Redis) that is logged and the process goes on.
* :class:`EpochWatcher` (at a bounded rate, and at once when a record is found missing):
  the store holds an epoch marker (``<prefix>:store:epoch``, no TTL). When it vanishes —
  ``FLUSHALL``, a failover to an empty replica, a different Redis behind the same name —
  the watcher logs ERROR naming the store (URL without password), counts
  ``nbq_store_resets_total`` once per reset (the process that re-creates the marker), and
  says how many jobs were active at its last look.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, JobState
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.settings import ConfigError
from nanobanana_queue.workers.urls import masked_url

log = get_logger("nbq.store")

#: Fastest a forced epoch check repeats (a burst of missing records costs one GET).
FORCED_CHECK_MIN_S = 1.0
#: States whose jobs have (or may have) a paid API task.
PAID_STATES = (JobState.SUBMITTING, JobState.GENERATING, JobState.DOWNLOADING)


class VolatileStoreError(ConfigError):
    """The store would lose job records on a restart (or evicts them); refused at start."""


@dataclass(frozen=True)
class Persistence:
    """What the store reported; ``None`` fields when ``CONFIG`` is unavailable."""

    appendonly: str | None
    save: str | None
    maxmemory_policy: str | None

    @property
    def known(self) -> bool:
        return self.appendonly is not None

    @property
    def volatile(self) -> bool:
        """Nothing survives a restart: no AOF and no RDB snapshots."""
        return self.appendonly == "no" and not (self.save or "").strip()

    @property
    def evicting(self) -> bool:
        return self.maxmemory_policy not in (None, "noeviction")

    def problem(self) -> str | None:
        if self.evicting:
            return (
                f"evicts keys (maxmemory-policy={self.maxmemory_policy}): job records would "
                "vanish under memory pressure; set maxmemory-policy noeviction"
            )
        if self.volatile:
            return "keeps no data across a restart (appendonly no, save ''); turn on appendonly yes"
        return None


def read_persistence(client: redis.Redis) -> Persistence:
    """One round trip; raises ``redis.ResponseError`` where ``CONFIG`` is disabled.

    On a Redis Cluster every primary is read (each keeps its own shards): the first one
    with a problem answers, so one volatile node is enough to refuse the store.
    """
    from nanobanana_queue.workers.redis_client import is_cluster

    if is_cluster(client):
        nodes = [n.redis_connection for n in client.get_primaries()]  # type: ignore[attr-defined]
        found = [read_persistence(node) for node in nodes if node is not None]
        return next((p for p in found if p.problem() is not None), found[0])
    pipe = client.pipeline(transaction=False)
    for name in ("appendonly", "save", "maxmemory-policy"):
        pipe.config_get(name)  # one round trip for all three
    replies = pipe.execute()
    names = ("appendonly", "save", "maxmemory-policy")
    values = [_one(reply, name) for reply, name in zip(replies, names, strict=True)]
    return Persistence(*values)


def _one(reply: object, name: str) -> str | None:
    if not isinstance(reply, dict):
        return None
    for key, value in reply.items():
        text_key = key.decode() if isinstance(key, bytes) else str(key)
        if text_key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def check_persistence(
    client: redis.Redis,
    url: str,
    *,
    allow_volatile: bool,
    role: str = "job store",
    warn: bool = True,
) -> Persistence | None:
    """Refuse a volatile or evicting store (one line naming it), unless allowed.

    ``warn=False`` (producers: every ``nbq`` command) logs an accepted risk at DEBUG: the
    worker says it once at start, where it matters, instead of every command repeating it.

    Returns what was read, or ``None`` when it could not be read (``CONFIG`` disabled or
    the store unreachable: logged, never fatal here; the first real operation reports an
    unreachable store anyway).
    """
    where = masked_url(url)
    try:
        found = read_persistence(client)
    except redis.ResponseError as exc:
        log.warning(
            "store_persistence_unknown",
            store=where,
            role=role,
            reason=f"CONFIG unavailable ({str(exc)[:80]}); assuming a managed, durable Redis",
        )
        return None
    except (redis.RedisError, OSError) as exc:
        log.warning("store_persistence_unchecked", store=where, role=role, error=type(exc).__name__)
        return None
    if not found.known:
        log.warning("store_persistence_unknown", store=where, role=role, reason="CONFIG empty")
        return found
    problem = found.problem()
    note = log.warning if warn else log.debug
    if problem is None:
        if found.appendonly == "no":
            note(
                "store_rdb_only",
                store=where,
                role=role,
                save=found.save,
                detail="RDB snapshots only: a crash loses writes since the last snapshot",
            )
        return found
    if allow_volatile:
        note(
            "store_volatile_allowed",
            store=where,
            role=role,
            problem=problem,
            detail="NBQ_ALLOW_VOLATILE_STORE=true: a restart or eviction loses job records",
        )
        return found
    raise VolatileStoreError(
        f"{role} {where} {problem} (or set NBQ_ALLOW_VOLATILE_STORE=true to accept the loss)"
    )


def check_settings_stores(
    settings: object, *, store_client: redis.Redis | None = None, warn: bool = True
) -> None:
    """``check_persistence`` for the job store and, when it is another Redis, the broker."""
    from nanobanana_queue.workers.settings import Settings

    assert isinstance(settings, Settings)
    allow = settings.allow_volatile_store
    own = store_client is None
    from nanobanana_queue.workers.redis_client import is_redis_broker, redis_client

    client = store_client or redis_client(
        settings, settings.job_store_url, socket_timeout=5, socket_connect_timeout=5
    )
    try:
        check_persistence(client, settings.job_store_url, allow_volatile=allow, warn=warn)
    finally:
        if own:
            client.close()
    broker = settings.broker_url
    if broker != settings.job_store_url and is_redis_broker(broker):
        other = redis_client(settings, broker, socket_timeout=5, socket_connect_timeout=5)
        try:
            check_persistence(other, broker, allow_volatile=allow, role="broker", warn=warn)
        finally:
            other.close()


@dataclass
class EpochWatcher:
    """Remembers the store's epoch and notices when it changes (see the module doc)."""

    client: redis.Redis
    key: str
    url: str
    index_prefix: str
    interval_s: float = 5.0
    #: Every index key of a state (``JobStore.index_keys``): a sharded store has one per
    #: shard, so ``index_prefix`` alone would count nothing there. None: the prefix's key.
    index_keys: Callable[[JobState], list[str]] | None = None
    known: str | None = None
    #: Active jobs per state at the last look (what a reset may have taken).
    last_active: dict[str, int] = field(default_factory=dict)
    last_check: float = 0.0
    resets_seen: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def maybe_check(self) -> bool:
        """Check if the interval has passed (cheap to call per task); True on a reset."""
        if time.monotonic() - self.last_check < self.interval_s:
            return False
        return self.check()

    def check_now(self) -> bool:
        """Check at once (a record was found missing), at most once per second."""
        if time.monotonic() - self.last_check < FORCED_CHECK_MIN_S:
            return False
        return self.check()

    def check(self) -> bool:
        """One pipeline: the marker and the active-state counts; True when it changed."""
        with self._lock:
            self.last_check = time.monotonic()
            try:
                keys = {state: self._keys_of(state) for state in ACTIVE_STATES}
                pipe = self.client.pipeline(transaction=False)
                pipe.get(self.key)
                for state in ACTIVE_STATES:
                    for index in keys[state]:
                        pipe.zcard(index)
                raw, *replies = pipe.execute()
            except (redis.RedisError, OSError) as exc:
                log.warning(
                    "store_epoch_unchecked", store=masked_url(self.url), error=type(exc).__name__
                )
                return False
            current = raw.decode() if isinstance(raw, bytes) else raw
            before = dict(self.last_active)
            counts = iter(replies)
            self.last_active = {
                s.value: sum(int(next(counts)) for _ in keys[s]) for s in ACTIVE_STATES
            }
            if current is not None and current == self.known:
                return False
            if current is None:
                current, created = self._create()
                if self.known is None:
                    # Nothing to compare with: a new store, or one emptied while this
                    # process was not watching.
                    log.warning(
                        "store_epoch_created" if created else "store_epoch_adopted",
                        store=masked_url(self.url),
                        epoch=current,
                        detail="no epoch marker: a new store, or one that lost its data "
                        "while no worker was watching",
                    )
                    self.known = current
                    return False
                return self._reset(current, counted=created, before=before)
            if self.known is None:
                self.known = current
                return False
            return self._reset(current, counted=False, before=before)

    def _keys_of(self, state: JobState) -> list[str]:
        if self.index_keys is not None:
            return self.index_keys(state)
        return [f"{self.index_prefix}{state.value}"]

    def _create(self) -> tuple[str, bool]:
        epoch = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        if self.client.set(self.key, epoch, nx=True):
            return epoch, True
        raw = self.client.get(self.key)
        return (raw.decode() if isinstance(raw, bytes) else str(raw or epoch)), False

    def _reset(self, current: str, *, counted: bool, before: dict[str, int]) -> bool:
        lost_epoch, self.known = self.known, current
        self.resets_seen += 1
        if counted:
            metrics.store_reset()
        paid = sum(before.get(s.value, 0) for s in PAID_STATES)
        log.error(
            "store_reset_detected",
            store=masked_url(self.url),
            lost_epoch=lost_epoch,
            new_epoch=current,
            active_jobs_at_last_check=sum(before.values()),
            paid_jobs_at_last_check=paid,
            detail="the job store lost its data (flush, failover to an empty replica, or a "
            "different Redis): jobs with an API task are rescued as their poll/download "
            "messages arrive (manifest 'recovered'); the others are reported as job_lost",
        )
        return True
