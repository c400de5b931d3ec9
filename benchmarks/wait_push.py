"""Pushed waits: wake latency of ``AsyncProducer.wait`` and its Redis cost while idle.

    python -m benchmarks.wait_push [JOBS]      # from a checkout; needs redis-server on PATH

Starts its own redis-server, enqueues JOBS jobs (no worker), awaits all of them in one
event loop, counts the Redis commands over 30 idle seconds (the safety net's re-reads),
then cancels every job from another thread and reports the time from each cancel call to
its ``wait()`` returning. A measurement printed, not a timed test.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import redis

from nanobanana_queue.devstack.procs import free_port
from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.async_producer import AsyncProducer
from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings

IDLE_S = 30.0


def main(jobs: int) -> None:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--dir", tempfile.mkdtemp()],
        stdout=subprocess.DEVNULL,
    )
    try:
        _run(f"redis://127.0.0.1:{port}/0", jobs)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _run(url: str, jobs: int) -> None:
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    settings = Settings(broker_url=url, evolink_api_key="k", allow_volatile_store=True)

    def producer() -> Producer:
        return Producer(
            settings, celery_app=create_app(settings), runtime=Runtime.from_settings(settings)
        )

    sync = producer()
    ids = [sync.enqueue({"prompt": "x"}, job_id=f"bench-{n}").job_id for n in range(jobs)]
    ended: dict[str, float] = {}

    def idle_then_cancel() -> None:
        time.sleep(1.0)
        client.config_resetstat()
        time.sleep(IDLE_S)
        stats = client.info("commandstats")
        calls = sum(int(v["calls"]) for v in stats.values())
        per_min = calls / jobs / (IDLE_S / 60)
        print(
            f"{IDLE_S:.0f} s idle, {jobs} waiting jobs: {calls} commands, "
            f"{per_min:.1f} per waiting job per minute"
        )
        for job_id in ids:
            ended[job_id] = time.perf_counter()
            sync.cancel(job_id)

    async def wait_all() -> list[tuple[str, float]]:
        async with AsyncProducer(producer=producer()) as waiting:

            async def one(job_id: str) -> tuple[str, float]:
                await waiting.wait(job_id, timeout_s=IDLE_S + 60)
                return job_id, time.perf_counter()

            tasks = [asyncio.create_task(one(job_id)) for job_id in ids]
            threading.Thread(target=idle_then_cancel, daemon=True).start()
            return await asyncio.gather(*tasks)

    woke = asyncio.run(wait_all())
    ms = sorted((at - ended[job_id]) * 1000 for job_id, at in woke)
    print(
        f"wake latency (cancel call → wait() returns), {jobs} waits in one loop: "
        f"median {statistics.median(ms):.1f} ms, p95 {ms[int(len(ms) * 0.95)]:.1f} ms, "
        f"max {ms[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
