"""Waits woken by a push: the sync ``Producer.wait`` and ``AsyncProducer.wait``.

Each wait's safety-net re-read is set far beyond its timeout, so a wait that returns was
woken by the job's end being published, never by a re-read.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from producers.async_producer import AsyncProducer
from tests.support.stack import Stack
from workers.jobs.state import JobState

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
