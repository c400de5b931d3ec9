"""The capacity model's check: one large simulated run with a worker pool per queue.

    python -m benchmarks.capacity_run --jobs 20000 [--patched]

Three worker processes (submit, poll, download; threads x8 each) so each stage's CPU is
its own process's CPU time. Writes per-job figures to
``benchmarks/results/capacity.json``; docs/capacity.md scales them to 1M and 100M jobs/day.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.b1_throughput import EventCounter
from benchmarks.harness import bench_stack
from benchmarks.pipeline_run import api_calls, run_jobs, summary

TIME_SCALE = 0.001
OUT = Path(__file__).resolve().parent / "results" / "capacity.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--timeout-s", type=float, default=None, help="default: 1800 s or 50 ms per job"
    )
    parser.add_argument("--patched", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.patched:
        harness.WORKER_MODULE[0] = "benchmarks.patched_worker"
    workdir = Path(tempfile.mkdtemp(prefix="nbq-capacity-"))
    with bench_stack(workdir, TIME_SCALE) as stack:
        pids = {
            queue: stack.start_worker(queues=queue, concurrency=args.concurrency, name=queue).pid
            for queue in ("submit", "poll", "download")
        }
        run_jobs(stack, 30, workers=pids, timeout_s=120, fetch_records=False)
        client = stack.redis.client()
        events = EventCounter(stack.redis.url)
        events.start()
        events.counts.clear()
        timeout_s = args.timeout_s or max(1800.0, args.jobs * 0.05)
        result = run_jobs(stack, args.jobs, workers=pids, timeout_s=timeout_s)
        reconciler_resends = _reconciler_resends(stack)
        time.sleep(1.0)
        event_kinds = events.stop()
        memory_after = int(client.info("memory")["used_memory"])
        queue_len = {q: int(client.llen(q)) for q in ("submit", "poll", "download")}
    n = args.jobs
    calls = api_calls(result)
    bytes_served = result.emulator_delta("file_bytes_served")
    memory_before = int(result.redis_before["used_memory"])
    report = {
        "command": "python -m benchmarks.capacity_run --jobs "
        + f"{n}{' --patched' if args.patched else ''}",
        "jobs": n,
        "patched_workers": args.patched,
        "time_scale": TIME_SCALE,
        "elapsed_s": round(result.elapsed_s, 1),
        "enqueue_s": round(result.enqueue_s, 1),
        "jobs_per_s": round(result.jobs_per_s, 1),
        "states": result.states,
        "per_job": {
            "cpu_ms_by_stage": {
                q: round(cpu * 1000 / n, 2) for q, cpu in result.worker_cpu_s.items()
            },
            "cpu_ms_total": round(sum(result.worker_cpu_s.values()) * 1000 / n, 2),
            "api_calls": {k: round(v / n, 3) for k, v in calls.items()},
            "redis_commands": round(result.redis_delta("total_commands_processed") / n, 1),
            "redis_net_input_bytes": round(result.redis_delta("total_net_input_bytes") / n),
            "redis_net_output_bytes": round(result.redis_delta("total_net_output_bytes") / n),
            "redis_retained_bytes_after_done": round((memory_after - memory_before) / n),
            "redis_peak_bytes_while_queued": round(
                (result.redis_peak_used_memory - memory_before) / n
            ),
            "bytes_to_s3": round(bytes_served / n),
            "task_events": round(
                sum(v for k, v in event_kinds.items() if k.startswith("task-")) / n, 2
            ),
        },
        "polls_per_job": summary([float(r.polls) for r in result.records]),
        "event_kinds": event_kinds,
        "worker_rss_peak_mb": round(result.worker_rss_peak / 2**20, 1),
        "redis_used_memory_peak_mb": round(result.redis_peak_used_memory / 2**20, 1),
        "queues_left": queue_len,
        "reconciler_resends": reconciler_resends,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


def _reconciler_resends(stack: harness.BenchStack) -> dict[str, int]:
    """Re-drives the workers' reconcilers logged during the run (a backlog is not a loss)."""
    totals = {"requeued": 0, "recovered_submitting": 0, "repolled": 0, "redownloaded": 0}
    for queue in ("submit", "poll", "download"):
        for line in stack.worker_log(queue).splitlines():
            if "reconciled" not in line:
                continue
            for key in totals:
                marker = f"{key}="
                if marker in line:
                    value = line.split(marker, 1)[1].split()[0].strip(",}")
                    totals[key] += int(value) if value.isdigit() else 0
    return totals


if __name__ == "__main__":
    raise SystemExit(main())
