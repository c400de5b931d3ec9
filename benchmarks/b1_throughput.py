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
#: The log format production runs (the image's default, NBQ_LOG_JSON=true): the console
#: renderer costs a worker ~3x more per line, a cost no deployment pays.
PRODUCTION_LOGS = {"NBQ_LOG_JSON": "true"}


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


def run(
    workdir: Path, n_jobs: int, concurrency: int, *, pool: str = "threads", noop: bool = True
) -> BenchResult:
    """B1 (and the numbers B1io reads): pipeline, no-op chain, I/O floor, one stack.

    ``pool`` and ``concurrency`` apply to all three workers alike (the held-out
    comparison runs ``prefork`` ×4); ``noop=False`` skips the no-op chain (B1's own
    ratio then is not measured, only B1io's).
    """
    with bench_stack(workdir / "b1", TIME_SCALE, overrides=PRODUCTION_LOGS) as stack:
        proc = stack.start_worker(
            queues="submit,poll,download", pool=pool, concurrency=concurrency, name="pipe"
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

        baseline = (
            _baseline(stack, n_jobs, concurrency, events, "noop_tasks", pool=pool) if noop else None
        )
        floor_emulator_before = stack.emulator.stats()
        io_floor = _baseline(stack, n_jobs, concurrency, events, "io_floor_tasks", pool=pool)
        floor_queries = int(stack.emulator.stats()["queries_total"]) - int(
            floor_emulator_before["queries_total"]
        )
        events.stop()

    calls = api_calls(pipeline)
    api_rps = sum(calls.values()) / pipeline.elapsed_s
    ratio = pipeline.jobs_per_s / baseline["jobs_per_s"] if baseline else 0.0
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
            "pool": pool,
            "concurrency": concurrency,
            "worker_processes": 1,
            "emulator_time_scale": TIME_SCALE,
            "warmup_jobs": WARMUP_JOBS,
        },
        raw={
            "pipeline_jobs_per_s": round(pipeline.jobs_per_s, 2),
            "baseline_jobs_per_s": round(baseline["jobs_per_s"], 2) if baseline else None,
            "pipeline_elapsed_s": round(pipeline.elapsed_s, 3),
            "pipeline_enqueue_s": round(pipeline.enqueue_s, 3),
            "baseline_elapsed_s": round(baseline["elapsed_s"], 3) if baseline else None,
            "io_floor_jobs_per_s": round(io_floor["jobs_per_s"], 2),
            "io_floor_ratio_vs_baseline": (
                round(io_floor["jobs_per_s"] / baseline["jobs_per_s"], 3) if baseline else None
            ),
            "pipeline_ratio_vs_io_floor": round(pipeline.jobs_per_s / io_floor["jobs_per_s"], 3),
            "io_floor_worker_cpu_ms_per_job": round(io_floor["cpu_s"] * 1000 / n_jobs, 2),
            "io_floor_queries_per_job": round(floor_queries / n_jobs, 3),
            "io_floor_redis_commands_per_job": round(io_floor["redis_commands"] / n_jobs, 1),
            "states": pipeline.states,
            "api_calls": calls,
            "api_calls_per_s": round(api_rps, 1),
            "api_calls_per_job": round(sum(calls.values()) / n_jobs, 3),
            "polls_per_job_mean": round(
                sum(r.polls for r in pipeline.records) / max(1, len(pipeline.records)), 3
            ),
            "worker_cpu_ms_per_job": round(pipeline.worker_cpu_s["pipe"] * 1000 / n_jobs, 2),
            "baseline_worker_cpu_ms_per_job": (
                round(baseline["cpu_s"] * 1000 / n_jobs, 2) if baseline else None
            ),
            "task_events_per_job": round(pipe_events / n_jobs, 2),
            "baseline_task_events_per_job": (
                round(baseline["events"] / n_jobs, 2) if baseline else None
            ),
            "event_kinds": event_kinds,
            "redis_commands_per_job": round(
                pipeline.redis_delta("total_commands_processed") / n_jobs, 1
            ),
            "baseline_redis_commands_per_job": (
                round(baseline["redis_commands"] / n_jobs, 1) if baseline else None
            ),
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
    pool: str = "threads",
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    """The same number of three-task chains through ``benchmarks.<module_name>``'s worker."""
    module = importlib.import_module(f"benchmarks.{module_name}")
    name = module_name.split("_")[0]
    args = [sys.executable, "-m", "celery", "-A", f"benchmarks.{module_name}", "worker"]
    args += ["-Q", module.QUEUE, "-P", pool, "-c", str(concurrency)]
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


def interleaved(
    workdir: Path,
    n_jobs: int,
    concurrency: int,
    *,
    pool: str = "prefork",
    rounds: int = 4,
    floor_acks: str = "early",
) -> dict[str, Any]:
    """B1io on a loaded machine: the pipeline and the I/O floor in alternating batches.

    Both workers run side by side for the whole run (an idle Celery worker waits in a
    BRPOP); each round sends ``n_jobs / rounds`` jobs to one, waits for all of them, then
    the same number to the other, the order swapped every round (ABBA), so a change of
    the machine's load hits both sides alike. The ratio is of the summed throughput
    (all jobs / all elapsed seconds per side); the rounds' own ratios show the spread.
    Worker CPU is counted over each side's own batches only. ``floor_acks="late"`` makes
    the floor's query and store tasks ack late like the pipeline's poll and download
    (benchmarks/io_floor_tasks.py ``LATE_ACKS``).
    """
    import statistics

    per_round = max(1, n_jobs // rounds)
    with bench_stack(workdir / "b1io", TIME_SCALE, overrides=PRODUCTION_LOGS) as stack:
        # Only now: the floor's app reads its broker from the stack's settings at import.
        floor = importlib.import_module("benchmarks.io_floor_tasks")
        pipe = stack.start_worker(
            queues="submit,poll,download", pool=pool, concurrency=concurrency, name="pipe"
        )
        args = [sys.executable, "-m", "celery", "-A", "benchmarks.io_floor_tasks", "worker"]
        args += ["-Q", floor.QUEUE, "-P", pool, "-c", str(concurrency)]
        args += ["--hostname", "io@bench", "--loglevel", "INFO"]
        io_env = {**stack.env(), "NBQ_BENCH_FLOOR_ACKS": floor_acks}
        io = start_proc(args, log=stack.dir / "worker-io.log", env=io_env)
        stack.workers.append(io)
        wait_worker(stack.redis.url, "io@bench", io)
        client = stack.redis.client()
        run_jobs(stack, WARMUP_JOBS, workers={"pipe": pipe.pid}, timeout_s=120, fetch_records=False)
        _floor_batch(client, floor, io.pid, WARMUP_JOBS)
        sides: dict[str, list[dict[str, float]]] = {"pipeline": [], "floor": []}
        for n in range(rounds):
            order = ("pipeline", "floor") if n % 2 == 0 else ("floor", "pipeline")
            for side in order:
                if side == "pipeline":
                    got = run_jobs(stack, per_round, workers={"pipe": pipe.pid}, timeout_s=600)
                    stored = got.states.get("stored", 0)
                    sides[side].append(
                        {
                            "elapsed_s": got.elapsed_s,
                            "cpu_s": got.worker_cpu_s["pipe"],
                            "stored": float(stored),
                        }
                    )
                else:
                    sides[side].append(_floor_batch(client, floor, io.pid, per_round))
    jobs = per_round * rounds

    def rate(side: str) -> float:
        return jobs / sum(r["elapsed_s"] for r in sides[side])

    def cpu_ms(side: str) -> float:
        return 1000 * sum(r["cpu_s"] for r in sides[side]) / jobs

    per_round_ratios = [
        f["elapsed_s"] / p["elapsed_s"]
        for p, f in zip(sides["pipeline"], sides["floor"], strict=True)
    ]
    return {
        "pool": pool,
        "concurrency": concurrency,
        "rounds": rounds,
        "floor_acks": floor_acks,
        "jobs_per_side": jobs,
        "pipeline_jobs_per_s": round(rate("pipeline"), 2),
        "io_floor_jobs_per_s": round(rate("floor"), 2),
        "pipeline_ratio_vs_io_floor": round(rate("pipeline") / rate("floor"), 3),
        "round_ratios": [round(r, 3) for r in per_round_ratios],
        "round_ratio_median": round(statistics.median(per_round_ratios), 3),
        "worker_cpu_ms_per_job": round(cpu_ms("pipeline"), 2),
        "io_floor_worker_cpu_ms_per_job": round(cpu_ms("floor"), 2),
        "all_stored": sum(r["stored"] for r in sides["pipeline"]) == jobs,
    }


def _floor_batch(client: Any, floor: Any, pid: int, count: int) -> dict[str, float]:
    """``count`` floor jobs from two sending threads; waits until all are stored."""
    client.set(floor.DONE_KEY, 0)
    cpu_before = tree_cpu_s(pid)
    started = time.perf_counter()
    threads = [
        threading.Thread(target=_send_chains, args=(floor, count // 2 + i * (count % 2)))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: int(client.get(floor.DONE_KEY) or 0) >= count, 600, 0.05, "floor jobs")
    elapsed = time.perf_counter() - started
    for thread in threads:
        thread.join()
    return {"elapsed_s": elapsed, "cpu_s": tree_cpu_s(pid) - cpu_before, "stored": float(count)}


def main(argv: list[str] | None = None) -> int:
    """B1 and B1io alone, with any pool: ``python -m benchmarks.b1_throughput --pool prefork
    --concurrency 4 --jobs 300 [--no-noop]``; prints both rows' numbers as JSON.
    ``--rounds 4``: B1io alone, pipeline and floor in alternating batches (``interleaved``)."""
    import argparse
    import json
    import tempfile

    from benchmarks.runner import versus_io_floor

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--pool", choices=("threads", "prefork"), default="prefork")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-noop", action="store_true", help="skip the no-op chain")
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="alternate pipeline and floor batches over this many rounds (see interleaved)",
    )
    parser.add_argument(
        "--floor-acks",
        choices=("early", "late"),
        default="early",
        help="with --rounds: the floor's query/store tasks ack early (issue 24's floor) or "
        "late, as the pipeline's poll and download do",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="nbq-b1-"))
    if args.rounds:
        print(
            json.dumps(
                interleaved(
                    workdir,
                    args.jobs,
                    args.concurrency,
                    pool=args.pool,
                    rounds=args.rounds,
                    floor_acks=args.floor_acks,
                )
            )
        )
        return 0
    b1 = run(workdir, args.jobs, args.concurrency, pool=args.pool, noop=not args.no_noop)
    row = versus_io_floor(b1)
    keys = (
        "pipeline_jobs_per_s", "io_floor_jobs_per_s", "pipeline_ratio_vs_io_floor",
        "worker_cpu_ms_per_job", "io_floor_worker_cpu_ms_per_job", "redis_commands_per_job",
        "io_floor_redis_commands_per_job", "api_calls_per_job", "io_floor_queries_per_job",
        "polls_per_job_mean", "baseline_jobs_per_s", "states",
    )  # fmt: skip
    print(json.dumps({"B1io": row.ratio, "passed": row.passed, **{k: b1.raw[k] for k in keys}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
