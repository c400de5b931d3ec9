"""Waits woken by a push: the sync ``Producer.wait`` and ``AsyncProducer.wait``.

Each wait's safety-net re-read is set far beyond its timeout, so a wait that returns was
woken by the job's end being published, never by a re-read.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.async_producer import AsyncProducer
from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import load_settings
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

NEVER_S = 600.0  # the safety net's re-read: never reached within a test


def test_the_sync_wait_returns_on_the_workers_push(stack: Stack) -> None:
    with stack.producer() as producer:
        stack.start_worker()
        job = producer.enqueue({"prompt": "a lighthouse", "quality": "1K"}, job_id="push-1")
        record = job.wait(timeout_s=60, interval_s=NEVER_S)
    assert record.state is JobState.STORED


def test_200_async_waits_in_one_loop_are_each_woken_by_their_jobs_end(stack: Stack) -> None:
    # Given 200 queued jobs (no worker) and one producer in one event loop
    sync = stack.producer()
    ids = [sync.enqueue({"prompt": "x"}, job_id=f"aw-{n}").job_id for n in range(200)]
    ended_at: dict[str, float] = {}

    def cancel_all() -> None:
        time.sleep(0.5)  # let every wait subscribe and read its record first
        for job_id in ids:
            ended_at[job_id] = time.monotonic()
            sync.cancel(job_id)

    async def main() -> list[tuple[str, float]]:
        async with AsyncProducer(producer=stack.producer()) as producer:

            async def one(job_id: str) -> tuple[str, float]:
                record = await producer.wait(job_id, timeout_s=60, safety_s=NEVER_S)
                assert record.state is JobState.CANCELLED
                return job_id, time.monotonic()

            waits = [asyncio.create_task(one(job_id)) for job_id in ids]
            # When every job is cancelled from another thread
            threading.Thread(target=cancel_all, daemon=True).start()
            return await asyncio.gather(*waits)

    woke = asyncio.run(main())
    # Then every wait returned its job's end (none timed out, none re-read its way there)
    assert sorted(j for j, _ in woke) == sorted(ids)
    lat = sorted(at - ended_at[j] for j, at in woke)
    print(f"wake latency ms: median {lat[len(lat) // 2] * 1000:.1f}, max {lat[-1] * 1000:.1f}")


def test_an_async_status_cancel_and_results_follow_the_sync_api(stack: Stack) -> None:
    async def main() -> None:
        async with AsyncProducer(producer=stack.producer()) as producer:
            job = await producer.enqueue({"prompt": "x"}, producer="shop", job_id="as-1")
            assert job.job_id == "shop~as-1"
            assert (await job.status()).state is JobState.QUEUED
            assert (await job.cancel()).state is JobState.CANCELLED
            assert (await job.wait(timeout_s=5)).state is JobState.CANCELLED

    asyncio.run(main())


def test_waits_on_a_cluster_store_are_woken_by_the_push_too(
    redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    # Given the job store on a 3-master cluster (the broker on a plain Redis)
    settings = load_settings(
        broker_url=redis_server.url, redis_url=redis_cluster.url, evolink_api_key="k"
    )

    def producer() -> Producer:
        return Producer(
            settings, celery_app=create_app(settings), runtime=Runtime.from_settings(settings)
        )

    sync = producer()
    ids = [sync.enqueue({"prompt": "x"}, job_id=f"cw-{n}").job_id for n in range(20)]

    def cancel_all() -> None:
        time.sleep(0.5)
        for job_id in ids:
            sync.cancel(job_id)

    async def main() -> list[JobState]:
        async with AsyncProducer(producer=producer()) as waiting:
            waits = [
                asyncio.create_task(waiting.wait(j, timeout_s=60, safety_s=NEVER_S)) for j in ids
            ]
            threading.Thread(target=cancel_all, daemon=True).start()
            return [r.state for r in await asyncio.gather(*waits)]

    # When they end, every async wait returns, and a sync wait on the cluster too
    assert asyncio.run(main()) == [JobState.CANCELLED] * 20
    assert sync.wait(ids[0], timeout_s=5, interval_s=NEVER_S).state is JobState.CANCELLED
