"""B1: pipeline jobs/s (enqueue → stored) versus a chain of three no-op Celery tasks.

Same broker, same pool and concurrency, one worker process each, run one after the
other. The emulator runs at a tiny time scale so generation itself costs ~20 ms and the
pipeline's own overhead (Redis transitions, API calls, S3 writes, Celery hops) dominates.
Also counts the Celery events (what Flower would receive) and Redis commands per job.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REQUEST,
    bench_stack,
    start_proc,
    stop_proc,
    tree_cpu_s,
    wait_worker,
)
from benchmarks.pipeline_run import api_calls, run_jobs
from benchmarks.results import BenchResult
from nanobanana_queue.devstack.procs import wait_until

TIME_SCALE = 0.001
TARGET_RATIO = 0.6
WARMUP_JOBS = 20


class EventCounter:
    """Counts Celery task events on the broker, as Flower would receive them."""

    def __init__(self, broker_url: str) -> None:
        from celery import Celery

        self.app = Celery("bench-events", broker=broker_url)
        self.counts: Counter[str] = Counter()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.counts[str(event.get("type", "?"))] += 1

    def start(self) -> None:
        self._thread.start()
        time.sleep(0.5)

    def stop(self) -> dict[str, int]:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=5)
        return dict(self.counts)

    def task_events(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind.startswith("task-"))


def run(workdir: Path, n_jobs: int, concurrency: int) -> BenchResult:
    with bench_stack(workdir / "b1", TIME_SCALE) as stack:
        proc = stack.start_worker(
            queues="submit,poll,download", concurrency=concurrency, name="pipe"
        )
        run_jobs(stack, WARMUP_JOBS, workers={"pipe": proc.pid}, timeout_s=120, fetch_records=False)
        events = EventCounter(stack.redis.url)
        events.start()
        before = events.task_events()
        pipeline = run_jobs(stack, n_jobs, workers={"pipe": proc.pid}, timeout_s=600)
        time.sleep(0.5)
        pipe_events = events.task_events() - before
        event_kinds = dict(events.counts)
        events.counts.clear()
        stop_proc(proc)
        stack.workers.remove(proc)

        baseline = _baseline(stack, n_jobs, concurrency, events, "noop_tasks")
        io_floor = _baseline(
            stack,
            n_jobs,
            concurrency,
            events,
            "io_floor_tasks",
            env={"NBQ_BENCH_RESULT_URL": _finished_result_url()},
        )
        events.stop()

    calls = api_calls(pipeline)
    api_rps = sum(calls.values()) / pipeline.elapsed_s
    ratio = pipeline.jobs_per_s / baseline["jobs_per_s"]
    stored = pipeline.states.get("stored", 0)
    return BenchResult(
        id="B1",
        title="pipeline throughput vs 3 no-op tasks",
        value=round(pipeline.jobs_per_s, 1),
        unit="jobs/s",
        ratio=round(ratio, 3),
        target=f">= {TARGET_RATIO}x baseline",
        passed=ratio >= TARGET_RATIO and stored == n_jobs,
        inputs={
            "jobs": n_jobs,
            "pool": "threads",
            "concurrency": concurrency,
            "worker_processes": 1,
            "emulator_time_scale": TIME_SCALE,
            "warmup_jobs": WARMUP_JOBS,
        },
        raw={
            "pipeline_jobs_per_s": round(pipeline.jobs_per_s, 2),
            "baseline_jobs_per_s": round(baseline["jobs_per_s"], 2),
            "pipeline_elapsed_s": round(pipeline.elapsed_s, 3),
            "pipeline_enqueue_s": round(pipeline.enqueue_s, 3),
            "baseline_elapsed_s": round(baseline["elapsed_s"], 3),
            "io_floor_jobs_per_s": round(io_floor["jobs_per_s"], 2),
            "io_floor_ratio_vs_baseline": round(io_floor["jobs_per_s"] / baseline["jobs_per_s"], 3),
            "pipeline_ratio_vs_io_floor": round(pipeline.jobs_per_s / io_floor["jobs_per_s"], 3),
            "io_floor_worker_cpu_ms_per_job": round(io_floor["cpu_s"] * 1000 / n_jobs, 2),
            "states": pipeline.states,
            "api_calls": calls,
            "api_calls_per_s": round(api_rps, 1),
            "api_calls_per_job": round(sum(calls.values()) / n_jobs, 3),
            "polls_per_job_mean": round(
                sum(r.polls for r in pipeline.records) / max(1, len(pipeline.records)), 3
            ),
            "worker_cpu_ms_per_job": round(pipeline.worker_cpu_s["pipe"] * 1000 / n_jobs, 2),
            "baseline_worker_cpu_ms_per_job": round(baseline["cpu_s"] * 1000 / n_jobs, 2),
            "task_events_per_job": round(pipe_events / n_jobs, 2),
            "baseline_task_events_per_job": round(baseline["events"] / n_jobs, 2),
            "event_kinds": event_kinds,
            "redis_commands_per_job": round(
                pipeline.redis_delta("total_commands_processed") / n_jobs, 1
            ),
            "baseline_redis_commands_per_job": round(baseline["redis_commands"] / n_jobs, 1),
            "redis_used_memory_delta_bytes_per_job": round(
                (
                    int(pipeline.redis_after["used_memory"])
                    - int(pipeline.redis_before["used_memory"])
                )
                / n_jobs
            ),
            "worker_rss_peak_mb": round(pipeline.worker_rss_peak / 2**20, 1),
            "all_stored": stored == n_jobs,
        },
    )


def _baseline(
    stack: Any,
    n_jobs: int,
    concurrency: int,
    events: EventCounter,
    module_name: str,
    *,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    """The same number of three-task chains through ``benchmarks.<module_name>``'s worker."""
    module = importlib.import_module(f"benchmarks.{module_name}")
    name = module_name.split("_")[0]
    args = [sys.executable, "-m", "celery", "-A", f"benchmarks.{module_name}", "worker"]
    args += ["-Q", module.QUEUE, "-P", "threads", "-c", str(concurrency)]
    args += ["--hostname", f"{name}@bench", "--loglevel", "INFO"]
    proc = start_proc(
        args, log=stack.dir / f"worker-{name}.log", env={**stack.env(), **(env or {})}
    )
    try:
        wait_worker(stack.redis.url, f"{name}@bench", proc)
        client = stack.redis.client()
        _send_chains(module, WARMUP_JOBS)
        wait_until(lambda: int(client.get(module.DONE_KEY) or 0) >= WARMUP_JOBS, 120)
        client.set(module.DONE_KEY, 0)
        events.counts.clear()
        commands_before = int(client.info("stats")["total_commands_processed"])
        cpu_before = tree_cpu_s(proc.pid)
        started = time.perf_counter()
        threads = [
            threading.Thread(target=_send_chains, args=(module, n_jobs // 2 + i * (n_jobs % 2)))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: int(client.get(module.DONE_KEY) or 0) >= n_jobs, 600, 0.05, f"{name} chains"
        )
        elapsed = time.perf_counter() - started
        cpu_s = tree_cpu_s(proc.pid) - cpu_before
        for thread in threads:
            thread.join()
        time.sleep(0.5)
        commands = int(client.info("stats")["total_commands_processed"]) - commands_before
        return {
            "jobs_per_s": n_jobs / elapsed,
            "elapsed_s": elapsed,
            "cpu_s": cpu_s,
            "events": float(events.task_events()),
            "redis_commands": float(commands),
        }
    finally:
        stop_proc(proc)


def _send_chains(module: Any, count: int) -> None:
    for job in range(count):
        module.send_chain(job)


def _finished_result_url() -> str:
    """A result link of a task that finished on the emulator (for the I/O floor chain)."""
    from nanobanana_queue.workers.evolink.models import GenerationRequest, TaskStatus
    from nanobanana_queue.workers.runtime import get_runtime

    api = get_runtime().api()
    task = api.create_task(
        GenerationRequest.model_validate(REQUEST), idempotency_key=None, callback_url=None
    )
    done: list[str] = []

    def finished() -> bool:
        current = api.get_task(task.id)
        done[:] = current.result_urls if current.status is TaskStatus.COMPLETED else []
        return bool(done)

    wait_until(finished, 60, 0.05, "a finished emulator task")
    return done[0]
