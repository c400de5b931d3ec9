"""``AsyncProducer``: the Producer for asyncio services, with waits woken by a push.

    async with AsyncProducer() as producer:
        job = await producer.enqueue({"prompt": "a lighthouse"}, producer="shop")
        record = await job.wait(timeout_s=300)
        images = await job.results()

Reads (``status``, ``wait``) use ``redis.asyncio``; every waiting job shares one pub/sub
connection (no thread, no connection per job): a job's end is published on
``<prefix>:jobend:<id>`` by the write that ends it (``workers/jobs/update.lua``), the
waiter is subscribed before it reads the record, and re-reads every ``safety_s`` only as a
safety net. Classic pub/sub reaches subscribers on any node, so a single Redis, a
Sentinel's master and a Cluster (subscribed on one of its nodes) all work.

Writes (``enqueue``, ``cancel``) and ``results`` run the sync :class:`Producer` in a worker
thread (``asyncio.to_thread``): publishing is kombu's, which is synchronous, and they are
short calls, not waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis

from nanobanana_queue.producers.api import SAFETY_REREAD_S, Producer, StoredImage
from nanobanana_queue.producers.errors import JobNotFoundError, WaitTimeoutError
from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.notify.push import job_end_channel
from nanobanana_queue.workers.redis_client import (
    cluster_nodes,
    is_cluster_url,
    is_sentinel_url,
    parse_sentinel_url,
)
from nanobanana_queue.workers.settings import Settings, get_settings

#: Connections the async client opens at most (reads wait for one; the subscription holds one).
MAX_CONNECTIONS = 32


def async_clients(settings: Settings) -> tuple[Any, aioredis.Redis]:
    """``(commands client, pub/sub client)`` for the job store: the same client on one
    Redis or a Sentinel's master; on a Cluster a cluster client for commands and one
    node for the subscription (a PUBLISH reaches every node)."""
    url = settings.job_store_url
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    if is_cluster_url(url):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes = cluster_nodes(url)
        parsed = urlsplit(url.split(",", 1)[0])
        secret = unquote(parsed.password) if parsed.password else password
        commands = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes], password=secret
        )
        host, port = nodes[0]
        return commands, aioredis.Redis(host=host, port=port, password=secret)
    if is_sentinel_url(url):
        from redis.asyncio.sentinel import Sentinel

        parsed_s = parse_sentinel_url(url)
        sentinel_password = (
            settings.redis_sentinel_password.get_secret_value()
            if settings.redis_sentinel_password
            else None
        )
        manager = Sentinel(
            list(parsed_s.sentinels), sentinel_kwargs={"password": sentinel_password}
        )
        client = manager.master_for(
            settings.redis_sentinel_master,
            db=parsed_s.db,
            password=parsed_s.password or password,
        )
        return client, client
    extra: dict[str, Any] = {}
    if password is not None and not urlsplit(url).password:
        extra["password"] = password
    # Many concurrent reads share a bounded pool and wait for a connection, never fail.
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, **extra)
    client = aioredis.Redis(connection_pool=pool)
    return client, client


class _EndWaiters:
    """One subscription for every job this process waits for; wakes their events."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._events: dict[str, set[asyncio.Event]] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        #: (Un)subscribes one at a time: concurrent first calls would each open a connection.
        self._lock = asyncio.Lock()

    async def add(self, job_id: str) -> asyncio.Event:
        channel = job_end_channel(self._prefix, job_id)
        event = asyncio.Event()
        first = channel not in self._events
        self._events.setdefault(channel, set()).add(event)
        if first:
            async with self._lock:
                if self._pubsub is None:
                    self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                # On failure the safety net re-reads and the reader resubscribes.
                with contextlib.suppress(redis.RedisError):
                    await self._pubsub.subscribe(channel)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read())
        return event

    async def remove(self, job_id: str, event: asyncio.Event) -> None:
        channel = job_end_channel(self._prefix, job_id)
        waiting = self._events.get(channel)
        if waiting is None:
            return
        waiting.discard(event)
        if not waiting:
            del self._events[channel]
            async with self._lock:
                with contextlib.suppress(redis.RedisError):
                    await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        while self._events:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except (redis.RedisError, OSError, RuntimeError):  # RuntimeError: not subscribed yet
                await self._reconnect()
                continue
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            for event in self._events.get(channel, ()):
                event.set()

    async def _reconnect(self) -> None:
        """A lost subscription (failover): wake everyone to re-read, then resubscribe."""
        for events in self._events.values():
            for event in events:
                event.set()
        await asyncio.sleep(0.2)
        async with self._lock:
            with contextlib.suppress(redis.RedisError, OSError):
                await self._pubsub.aclose()
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            if self._events:
                with contextlib.suppress(redis.RedisError, OSError):
                    await self._pubsub.subscribe(*self._events)

    async def close(self) -> None:
        self._events.clear()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, redis.RedisError, OSError):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()


class AsyncProducer:
    """Enqueue and follow jobs from an event loop. Use as ``async with``; one per process."""

    def __init__(self, settings: Settings | None = None, *, producer: Producer | None = None):
        self.settings = settings or (producer.settings if producer else get_settings())
        self.sync = producer or Producer(self.settings)
        self._redis, self._subscriber = async_clients(self.sync.runtime.settings)
        self._waiters = _EndWaiters(self._subscriber, self.sync.runtime.store.prefix)

    async def __aenter__(self) -> AsyncProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._waiters.close()
        await self._redis.aclose()
        if self._subscriber is not self._redis:
            await self._subscriber.aclose()
        await asyncio.to_thread(self.sync.close)

    async def enqueue(
        self, request: GenerationRequest | Mapping[str, Any], **options: Any
    ) -> AsyncJobHandle:
        """``Producer.enqueue`` (same arguments and errors), run off the event loop."""
        handle = await asyncio.to_thread(self.sync.enqueue, request, **options)
        return AsyncJobHandle(self, handle.job_id)

    def job(self, job_id: str) -> AsyncJobHandle:
        return AsyncJobHandle(self, job_id)

    async def status(self, job_id: str) -> JobRecord:
        """The job's record (one async HGETALL; the S3 manifest once it has expired)."""
        raw = await self._redis.hgetall(self.sync.runtime.store.key(job_id))
        if raw:
            data = {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode() if isinstance(v, bytes) else v
                )
                for k, v in raw.items()
            }
            data.setdefault("job_id", job_id)
            return JobRecord.from_hash(data)
        record = await asyncio.to_thread(self.sync.lookup, job_id)
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    async def wait(
        self, job_id: str, *, timeout_s: float | None = None, safety_s: float = SAFETY_REREAD_S
    ) -> JobRecord:
        """Until the job is stored, failed or cancelled; woken by its end's push."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        event = await self._waiters.add(job_id)
        try:
            while True:
                event.clear()  # before the read: an end pushed after it still wakes us
                record = await self.status(job_id)
                if record.is_terminal:
                    return record
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise WaitTimeoutError(
                        f"job {job_id} still {record.state.value} after {timeout_s}s"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        event.wait(), timeout=safety_s if left is None else min(safety_s, left)
                    )
        finally:
            await self._waiters.remove(job_id, event)

    async def cancel(self, job_id: str) -> JobRecord:
        return await asyncio.to_thread(self.sync.cancel, job_id)

    async def results(self, job_id: str, *, expiry_s: int | None = None) -> list[StoredImage]:
        return await asyncio.to_thread(self.sync.results, job_id, expiry_s=expiry_s)


class AsyncJobHandle:
    """A job id with the awaitable calls that follow it."""

    def __init__(self, producer: AsyncProducer, job_id: str) -> None:
        self.producer = producer
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"AsyncJobHandle({self.job_id!r})"

    async def status(self) -> JobRecord:
        return await self.producer.status(self.job_id)

    async def wait(self, timeout_s: float | None = None) -> JobRecord:
        return await self.producer.wait(self.job_id, timeout_s=timeout_s)

    async def results(self, *, expiry_s: int | None = None) -> list[StoredImage]:
        return await self.producer.results(self.job_id, expiry_s=expiry_s)

    async def cancel(self) -> JobRecord:
        return await self.producer.cancel(self.job_id)
