"""B5: ``Producer.enqueue`` requests/s versus raw ``app.send_task`` of the same message.

In this process, against a benchmark-owned redis-server with no workers (messages wait in
the queue). Alternating rounds; the median round of each is compared.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from benchmarks.harness import REQUEST, RedisProc, use_env
from benchmarks.results import BenchResult

TARGET_RATIO = 0.8
ROUNDS = 3


def run(workdir: Path, n_requests: int) -> BenchResult:
    (workdir / "b5").mkdir(parents=True, exist_ok=True)
    redis_proc = RedisProc(workdir / "b5")
    redis_proc.start()
    try:
        use_env({"NBQ_BROKER_URL": redis_proc.url, "NBQ_EVOLINK_API_KEY": "bench"})
        from nanobanana_queue.producers.api import Producer
        from nanobanana_queue.workers.contract import TASK_GENERATE
        from nanobanana_queue.workers.settings import get_settings

        producer = Producer(get_settings())
        app = producer.celery
        kwargs = {"request": dict(REQUEST), "job_id": None, "producer": "bench"}
        for _ in range(50):  # warm up connections and scripts
            producer.enqueue(REQUEST)
            app.send_task(TASK_GENERATE, kwargs=kwargs)
        raw_rates: list[float] = []
        enqueue_rates: list[float] = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(n_requests):
                app.send_task(TASK_GENERATE, kwargs=kwargs)
            raw_rates.append(n_requests / (time.perf_counter() - started))
            started = time.perf_counter()
            for _ in range(n_requests):
                producer.enqueue(REQUEST, producer="bench")
            enqueue_rates.append(n_requests / (time.perf_counter() - started))
            redis_proc.client().flushdb()
    finally:
        redis_proc.stop()
    raw = statistics.median(raw_rates)
    enq = statistics.median(enqueue_rates)
    ratio = enq / raw
    return BenchResult(
        id="B5",
        title="producer enqueue vs raw send_task",
        value=round(enq, 1),
        unit="enqueues/s",
        ratio=round(ratio, 3),
        target=f">= {TARGET_RATIO}x send_task",
        passed=ratio >= TARGET_RATIO,
        inputs={"requests_per_round": n_requests, "rounds": ROUNDS, "threads": 1},
        raw={
            "enqueue_per_s_rounds": [round(r, 1) for r in enqueue_rates],
            "send_task_per_s_rounds": [round(r, 1) for r in raw_rates],
            "send_task_per_s": round(raw, 1),
        },
    )
