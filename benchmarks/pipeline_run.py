"""One measured pipeline run: enqueue N jobs, wait for all to end, read what it cost.

Shared by B1 (throughput), B2 (polls and lag), B3 (in flight) and the capacity run, so
they all measure the same way: jobs go through ``Producer.enqueue`` from this process,
real worker processes do the rest, and the numbers come from the job records, the
emulator's counters, Redis ``INFO`` and the worker processes' CPU times.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import REQUEST, BenchStack, tree_cpu_s, tree_rss_bytes


@dataclass
class RunResult:
    jobs: int
    elapsed_s: float
    enqueue_s: float
    states: dict[str, int]
    records: list[Any]
    emulator_before: dict[str, Any]
    emulator_after: dict[str, Any]
    redis_before: dict[str, Any]
    redis_after: dict[str, Any]
    redis_peak_used_memory: int
    worker_cpu_s: dict[str, float]
    worker_rss_peak: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def emulator_delta(self, key: str) -> int:
        return int(self.emulator_after.get(key, 0)) - int(self.emulator_before.get(key, 0))

    def redis_delta(self, key: str) -> int:
        return int(self.redis_after.get(key, 0)) - int(self.redis_before.get(key, 0))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 4),
        "p95": round(percentile(values, 0.95), 4),
        "max": round(max(values), 4),
        "mean": round(statistics.fmean(values), 4),
    }


def run_jobs(
    stack: BenchStack,
    n_jobs: int,
    *,
    workers: dict[str, int],
    timeout_s: float,
    enqueue_threads: int = 2,
    on_tick: Callable[[], None] | None = None,
    fetch_records: bool = True,
    request: dict[str, Any] | None = None,
    arrival_rate_per_s: float | None = None,
    progress_interval_s: float = 0.05,
) -> RunResult:
    """Enqueue ``n_jobs`` (from ``enqueue_threads`` threads) and wait until all are terminal.

    ``workers`` maps a worker name to its pid (for CPU and RSS). Progress is read every
    ``progress_interval_s`` (ZCARD of every state index: on a sharded store, one per
    shard and state, so the capacity run on a cluster reads it less often). Throughput is counted
    from the first enqueue to the last job stored, so enqueueing is part of it.
    """
    producer = stack.producer()
    store = producer.runtime.store
    redis_client = stack.redis.client()
    cpu_before = {name: tree_cpu_s(pid) for name, pid in workers.items()}
    emu_before = stack.emulator.stats()
    redis_before = dict(redis_client.info())
    job_ids: list[str] = []
    lock = threading.Lock()

    def enqueue(count: int) -> None:
        body = request or REQUEST
        gap_s = enqueue_threads / arrival_rate_per_s if arrival_rate_per_s else 0.0
        mine = []
        for _ in range(count):
            mine.append(producer.enqueue(body, producer="bench").job_id)
            if gap_s:
                time.sleep(gap_s)
        with lock:
            job_ids.extend(mine)

    started = time.perf_counter()
    share = [
        n_jobs // enqueue_threads + (i < n_jobs % enqueue_threads) for i in range(enqueue_threads)
    ]
    threads = [threading.Thread(target=enqueue, args=(n,)) for n in share]
    for thread in threads:
        thread.start()
    from nanobanana_queue.workers.jobs.state import ACTIVE_STATES

    peak_mem = 0
    rss_peak = 0
    enqueue_s = 0.0
    deadline = started + timeout_s
    while True:
        if not enqueue_s and not any(t.is_alive() for t in threads):
            enqueue_s = time.perf_counter() - started
        # Terminal states are not indexed: done = enqueued - still active.
        active = sum(store.count_in_state(s) for s in ACTIVE_STATES)
        done = (n_jobs - active) if enqueue_s else 0
        peak_mem = max(peak_mem, int(redis_client.info("memory")["used_memory"]))
        rss_peak = max(rss_peak, sum(tree_rss_bytes(pid) for pid in workers.values()))
        if on_tick is not None:
            on_tick()
        if enqueue_s and done >= n_jobs:
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {done}/{n_jobs} jobs ended within {timeout_s}s")
        time.sleep(progress_interval_s)
    elapsed_s = time.perf_counter() - started
    for thread in threads:
        thread.join()
    cpu_after = {name: tree_cpu_s(pid) for name, pid in workers.items()}
    fetched = [store.get(job_id) for job_id in job_ids] if fetch_records else []
    records = [record for record in fetched if record is not None]
    states = dict(Counter(record.state.value for record in records))
    return RunResult(
        jobs=n_jobs,
        elapsed_s=elapsed_s,
        enqueue_s=enqueue_s,
        states=states,
        records=records,
        emulator_before=emu_before,
        emulator_after=stack.emulator.stats(),
        redis_before=redis_before,
        redis_after=dict(redis_client.info()),
        redis_peak_used_memory=peak_mem,
        worker_cpu_s={name: cpu_after[name] - cpu_before[name] for name in workers},
        worker_rss_peak=rss_peak,
    )


def api_calls(run: RunResult) -> dict[str, int]:
    """Creates, queries and file downloads the emulator answered during the run."""
    return {
        "creates": run.emulator_delta("creates_accepted"),
        "queries": run.emulator_delta("queries_total"),
        "files": run.emulator_delta("file_downloads"),
    }
