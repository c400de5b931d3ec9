"""Per-process dependencies of the stages, built lazily and rebuilt after a fork.

A prefork worker forks children after importing this module; sockets must not be
shared across processes, so every child builds its own clients on first use.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis
from redis import Redis

from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.policy.schedule import Backoff, PollSchedule
from nanobanana_queue.workers.redis_client import (
    check_store_shards,
    is_cluster,
    is_redis_broker,
    redis_client,
)
from nanobanana_queue.workers.resilience.breaker import SubmissionBreaker
from nanobanana_queue.workers.resilience.limiter import SharedRateLimiter
from nanobanana_queue.workers.settings import Settings, get_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from nanobanana_queue.workers.evolink.client import EvolinkClient
    from nanobanana_queue.workers.jobs.durability import EpochWatcher
    from nanobanana_queue.workers.resilience.credits import CreditLedger
    from nanobanana_queue.workers.resilience.fairshare import FairShare
    from nanobanana_queue.workers.security.urlguard import UrlPolicy
    from nanobanana_queue.workers.stages.steps import Notify
    from nanobanana_queue.workers.storage.s3 import ObjectStore


@dataclass
class Runtime:
    """Everything a stage needs; tests build one directly with their own parts."""

    settings: Settings
    redis: redis.Redis
    store: JobStore
    breaker: SubmissionBreaker
    limiter: SharedRateLimiter
    schedule: PollSchedule
    backoff: Backoff
    rng: random.Random = field(default_factory=random.Random)
    _api: EvolinkClient | None = None
    _objects: ObjectStore | None = None
    _url_policy: UrlPolicy | None = None
    _result_client: httpx.Client | None = None
    _broker: Redis | None = None
    _epoch: EpochWatcher | None = None
    _credits: CreditLedger | None = None
    _fair: FairShare | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        client = redis_client(settings)
        if is_cluster(client):
            check_store_shards(client, settings)
        runtime = cls(
            settings=settings,
            redis=client,
            store=JobStore(
                client,
                prefix=settings.key_prefix,
                retention_s=settings.job_retention_s,
                wait_replicas=settings.store_wait_replicas,
                wait_timeout_ms=settings.store_wait_timeout_ms,
                shards=settings.store_shards if is_cluster(client) else 0,
            ),
            breaker=SubmissionBreaker(
                client,
                prefix=settings.key_prefix,
                probe_interval_s=settings.breaker_probe_interval_s,
            ),
            limiter=SharedRateLimiter(
                client,
                prefix=settings.key_prefix,
                rates_per_s={"create": settings.creates_per_s, "query": settings.queries_per_s},
            ),
            schedule=PollSchedule.from_settings(settings),
            backoff=Backoff.from_settings(settings),
        )
        # A job's end is published by the write that ends it (update.lua, one round trip;
        # workers/notify/push.py names the channel).
        runtime.store.end_channel_prefix = settings.key_prefix
        from nanobanana_queue.workers import metrics

        if metrics.holding():  # NBQ_METRICS_FLUSH_S: state counts merge with the rest
            runtime.store.state_counts = metrics.job_state
        return runtime

    def install_notify(
        self, send: Callable[[Notify], object], send_task: Callable[..., object]
    ) -> None:
        """Tell a job's end: ``on_done`` through ``send_task`` (an app's), and ``nbq.notify``
        through ``send`` (a dispatcher's) when webhooks are configured (NBQ_NOTIFY_SECRETS)."""
        from nanobanana_queue.workers.notify.config import NotifyConfig
        from nanobanana_queue.workers.notify.hook import (
            notify_listener,
            on_done_listener,
            progress_listener,
        )

        # Both backed by the notify outbox: a send lost with this process is made again by
        # the reconciler (workers/notify/outbox.py).
        self.store.outbox_listeners.append(on_done_listener(send_task))
        if self.settings.notify_secrets is None:
            return
        config = NotifyConfig.from_settings(self.settings)
        self.store.outbox_listeners.append(notify_listener(config, send))
        self.store.outbox_producers = frozenset(config.default_urls)
        if config.progress_producers:  # opt-in job.progress: best effort, no outbox
            self.store.progress_listeners.append(progress_listener(config, send))

    def api(self) -> EvolinkClient:
        if self._api is None:
            from nanobanana_queue.workers.evolink.client import EvolinkClient

            self._api = EvolinkClient.from_settings(self.settings)
        return self._api

    def objects(self) -> ObjectStore:
        if self._objects is None:
            from nanobanana_queue.workers.storage.s3 import ObjectStore

            objects = ObjectStore.from_settings(self.settings)
            objects.ensure_bucket()  # once per process; a fresh MinIO has no bucket yet
            self._objects = objects
        return self._objects

    def fair(self) -> FairShare:
        """The fair-share gate between producers (workers/resilience/fairshare.py)."""
        if self._fair is None:
            from nanobanana_queue.workers.resilience.fairshare import FairShare, parse_weights

            self._fair = FairShare(
                self.redis,
                prefix=self.settings.key_prefix,
                weights=parse_weights(self.settings.producer_weights),
                max_in_flight=self.settings.max_in_flight_per_producer,
                flight_ttl_s=self.settings.poll_deadline_s + 600,
            )
            self._fair.migrate()  # lists of the layout before, if any (once per process)
        return self._fair

    def credits(self) -> CreditLedger:
        """The day's credit book with this process's budgets (workers/resilience/credits.py)."""
        if self._credits is None:
            from nanobanana_queue.workers.resilience.credits import CreditLedger

            self._credits = CreditLedger(
                self.redis,
                prefix=self.settings.key_prefix,
                limit_daily=self.settings.credit_limit_daily,
                limit_daily_per_producer=self.settings.credit_limit_daily_per_producer,
            )
        return self._credits

    def url_policy(self) -> UrlPolicy:
        if self._url_policy is None:
            from nanobanana_queue.workers.security.urlguard import UrlPolicy

            self._url_policy = UrlPolicy.from_settings(self.settings)
        return self._url_policy

    def broker(self) -> Redis | None:
        """The broker's Redis (for queue lengths); the job store's client when they are the
        same server, ``None`` when the broker is not Redis."""
        url = self.settings.broker_url
        if url == self.settings.job_store_url:
            return self.redis
        if not is_redis_broker(url):
            return None
        if self._broker is None:
            self._broker = redis_client(self.settings, url, health_check_interval=0)
        return self._broker

    def epoch(self) -> EpochWatcher:
        """This process's watcher of the store's epoch marker (workers/jobs/durability.py)."""
        if self._epoch is None:
            from nanobanana_queue.workers.jobs.durability import EpochWatcher

            self._epoch = EpochWatcher(
                client=self.redis,
                key=self.store.epoch_key,
                url=self.settings.job_store_url,
                index_prefix=f"{self.store.prefix}:state:",
                index_keys=self.store.index_keys,
                interval_s=self.settings.store_epoch_check_s,
            )
        return self._epoch

    def result_client(self) -> httpx.Client:
        """One guarded HTTP client per process for result links: keep-alive connections
        and TLS sessions are reused across downloads (a new client per download cost a
        TCP connect, a DNS lookup and a handshake every time). Thread-safe."""
        if self._result_client is None:
            from nanobanana_queue.workers.security.netguard import guarded_client

            self._result_client = guarded_client(self.url_policy())
        return self._result_client


_runtime: Runtime | None = None
_runtime_pid: int | None = None


def get_runtime() -> Runtime:
    """This process's runtime (a new one in each forked child)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        parent = _runtime
        _runtime = Runtime.from_settings(get_settings())
        _runtime_pid = os.getpid()
        from nanobanana_queue.workers.app import app
        from nanobanana_queue.workers.dispatch import Dispatcher

        _runtime.install_notify(Dispatcher.for_settings(app, _runtime.settings).send, app.send_task)
        if parent is not None and parent._epoch is not None:
            # A forked child knows the epoch its parent saw at start: a flush between the
            # fork and the child's first check is still a reset, not a "new store".
            _runtime.epoch().known = parent._epoch.known
    return _runtime


def reset_runtime() -> None:
    global _runtime, _runtime_pid
    _runtime = None
    _runtime_pid = None
