"""Redis broker vs RabbitMQ (quorum queues, native delayed delivery), side by side in one run.

    python -m benchmarks.brokers [--b1-jobs 300] [--b3-jobs 1000] [--concurrency 8]

For each broker, on the same machine, one after the other:
- **B1** (throughput): the pipeline's jobs/s, enqueue → stored, at emulator time scale
  0.001 (generation ~free, so the broker and the pipeline's own work dominate);
- **B3** (in flight): N jobs generating at once at time scale 1, each with a countdown
  poll in flight: worker RSS peak, ETA messages held by workers (``inspect scheduled``,
  sampled), the lateness of each job's end after its generation finished, duplicate
  creates and duplicate/stale deliveries.

RabbitMQ runs in a vhost of its own on the machine's node (made and deleted here); the
job store is the benchmark's own redis-server in both runs. Writes
``benchmarks/results/brokers.json``. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import bench_stack
from benchmarks.pipeline_run import run_jobs, summary

RESULTS = Path(__file__).resolve().parent / "results" / "brokers.json"
B3_REQUEST = {"prompt": "benchmark: a long banana", "size": "1:1", "quality": "4K"}
B3_POLL = {
    "NBQ_POLL_MIN_INTERVAL_S": "2",
    "NBQ_POLL_MAX_INTERVAL_S": "15",
    "NBQ_DEFAULT_ESTIMATED_TIME_S": "30",
    "NBQ_POLL_DEADLINE_S": "3000",
}


@contextmanager
def broker(kind: str) -> Iterator[str | None]:
    """``None`` (the stack's Redis) or the URL of a fresh vhost on the machine's RabbitMQ."""
    if kind == "redis":
        yield None
        return
    name = f"nbq-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True)


def _eta(entry: dict[str, Any]) -> datetime:
    moment = datetime.fromisoformat(str(entry["eta"]))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def b1(workdir: Path, kind: str, n_jobs: int, concurrency: int) -> dict[str, Any]:
    with broker(kind) as url, bench_stack(workdir / f"b1-{kind}", 0.001, broker_url=url) as st:
        proc = st.start_worker(queues="submit,poll,download", concurrency=concurrency, name="p")
        run_jobs(st, 20, workers={"p": proc.pid}, timeout_s=120, fetch_records=False)  # warm-up
        run = run_jobs(st, n_jobs, workers={"p": proc.pid}, timeout_s=600)
    return {
        "jobs": n_jobs,
        "jobs_per_s": round(run.jobs_per_s, 2),
        "elapsed_s": round(run.elapsed_s, 2),
        "enqueue_s": round(run.enqueue_s, 2),
        "worker_cpu_ms_per_job": round(run.worker_cpu_s["p"] * 1000 / n_jobs, 2),
        "states": run.states,
        "polls_per_job_mean": round(sum(r.polls for r in run.records) / max(1, n_jobs), 3),
    }


def b3(workdir: Path, kind: str, n_jobs: int, concurrency: int) -> dict[str, Any]:
    duration = n_jobs / 50.0 + 15.0  # every job created before the first finishes
    held: list[int] = []
    passing: list[int] = []
    with (
        broker(kind) as url,
        bench_stack(
            workdir / f"b3-{kind}",
            1.0,
            emulator_args=["--fixed-duration", f"{duration:g}"],
            overrides=B3_POLL,
            broker_url=url,
        ) as st,
    ):
        sd = st.start_worker(queues="submit,download", concurrency=concurrency, name="sd")
        poll = st.start_worker(queues="poll", concurrency=concurrency, name="poll")
        from nanobanana_queue.workers.app import create_app
        from nanobanana_queue.workers.settings import get_settings

        inspector = create_app(get_settings()).control
        last = [0.0]

        def tick() -> None:  # ETA messages held by the workers, every ~2 s
            if time.monotonic() - last[0] < 2.0:
                return
            last[0] = time.monotonic()
            replies = inspector.inspect(timeout=1.0).scheduled() or {}
            now = datetime.now(UTC)
            entries = [e for v in replies.values() for e in v]
            # Held for a countdown: ETA still ahead (a due message passing through
            # Celery's timer on arrival has one in the past).
            held.append(sum(1 for e in entries if _eta(e) > now))
            passing.append(len(entries))

        run = run_jobs(
            st,
            n_jobs,
            workers={"sd": sd.pid, "poll": poll.pid},
            timeout_s=duration + n_jobs / 5 + 300,
            on_tick=tick,
            request=B3_REQUEST,
        )
        logs = st.worker_log("sd") + st.worker_log("poll")
    by_key = run.emulator_after.get("creates_by_idempotency_key", {})
    # Lateness: a job's end (stored) after its generation was due to finish.
    lateness = [r.updated_at - (r.created_at + duration) for r in run.records]
    return {
        "jobs": n_jobs,
        "generation_s": duration,
        "worker_rss_peak_mb": round(run.worker_rss_peak / 2**20, 1),
        "eta_messages_held_by_workers": summary([float(n) for n in held]),
        "scheduled_entries_incl_due_in_transit": summary([float(n) for n in passing]),
        "end_lateness_s": summary(lateness),
        "duplicate_creates": sum(max(0, int(n) - 1) for n in by_key.values()),
        "creates_accepted": run.emulator_delta("creates_accepted"),
        "queries": run.emulator_delta("queries_total"),
        "polls_per_job": summary([float(r.polls) for r in run.records]),
        "stale_or_duplicate_deliveries": len(re.findall(r"succeeded in [0-9.e-]+s: 'stale", logs)),
        "states": run.states,
        "worker_cpu_s": {k: round(v, 1) for k, v in run.worker_cpu_s.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--b1-jobs", type=int, default=300)
    parser.add_argument("--b3-jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="nbq-bench-brokers-"))
    out: dict[str, Any] = {"command": "python -m benchmarks.brokers " + " ".join(argv or [])}
    for kind in ("redis", "amqp"):
        print(f"[{kind}] B1 ...", flush=True)
        out[f"B1_{kind}"] = b1(workdir, kind, args.b1_jobs, args.concurrency)
        print(json.dumps(out[f"B1_{kind}"]), flush=True)
        print(f"[{kind}] B3 ...", flush=True)
        out[f"B3_{kind}"] = b3(workdir, kind, args.b3_jobs, args.concurrency)
        print(json.dumps(out[f"B3_{kind}"]), flush=True)
    out["ratios_amqp_vs_redis"] = {
        "b1_jobs_per_s": round(out["B1_amqp"]["jobs_per_s"] / out["B1_redis"]["jobs_per_s"], 3),
        "b1_worker_cpu_per_job": round(
            out["B1_amqp"]["worker_cpu_ms_per_job"] / out["B1_redis"]["worker_cpu_ms_per_job"], 3
        ),
        "b3_worker_rss_peak": round(
            out["B3_amqp"]["worker_rss_peak_mb"] / out["B3_redis"]["worker_rss_peak_mb"], 3
        ),
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["ratios_amqp_vs_redis"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
