"""B3: N jobs in flight at once — worker memory, Redis memory, redeliveries, duplicates.

The emulator runs at time scale 1 with ``--fixed-duration`` long enough that every job is
created before the first finishes, so all N are ``generating`` (each a countdown poll
message) together. Pools as in production: submit+download and poll workers.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.harness import bench_stack
from benchmarks.pipeline_run import run_jobs, summary
from benchmarks.results import BenchResult

TARGET_RSS_BYTES = 1.5 * 2**30
#: A long generation (4K: 60 s nominal estimate), so poll hops are long as in production.
LONG_REQUEST = {"prompt": "benchmark: a long banana", "size": "1:1", "quality": "4K"}
#: Poll hops for long generations: production-like, but capped so the machine keeps up.
POLL_SETTINGS = {
    "NBQ_POLL_MIN_INTERVAL_S": "2",
    "NBQ_POLL_MAX_INTERVAL_S": "60",
    "NBQ_DEFAULT_ESTIMATED_TIME_S": "30",
    "NBQ_POLL_DEADLINE_S": "3000",
}


def duration_for(n_jobs: int) -> float:
    """Long enough to create every job first (~50 creates/s here), plus a margin."""
    return max(60.0, n_jobs / 50.0 + 30.0)


def run(workdir: Path, n_jobs: int, concurrency: int) -> BenchResult:
    duration = duration_for(n_jobs)
    with bench_stack(
        workdir / "b3",
        1.0,
        emulator_args=["--fixed-duration", f"{duration:g}"],
        overrides=POLL_SETTINGS,
    ) as stack:
        sd = stack.start_worker(queues="submit,download", concurrency=concurrency, name="sd")
        poll = stack.start_worker(queues="poll", concurrency=concurrency, name="poll")
        peak_generating = [0]
        store = stack.producer().runtime.store

        def tick() -> None:
            from nanobanana_queue.workers.jobs.state import JobState

            peak_generating[0] = max(peak_generating[0], store.count_in_state(JobState.GENERATING))

        result = run_jobs(
            stack,
            n_jobs,
            workers={"sd": sd.pid, "poll": poll.pid},
            timeout_s=duration + n_jobs / 5 + 300,
            on_tick=tick,
            request=LONG_REQUEST,
        )
        logs = stack.worker_log("sd") + stack.worker_log("poll")
    stats = result.emulator_after
    by_key = stats.get("creates_by_idempotency_key", {})
    duplicate_creates = sum(max(0, int(n) - 1) for n in by_key.values())
    creates = int(stats.get("creates_accepted", 0))
    queries = int(stats.get("queries_total", 0))
    polls_recorded = sum(r.polls for r in result.records)
    outcomes = {
        label: len(re.findall(rf"succeeded in [0-9.e-]+s: '{label}", logs))
        for label in ("stale_token", "already_submitted", "lost_race", "busy_", "stale_", "gone")
    }
    stored = result.states.get("stored", 0)
    rss = result.worker_rss_peak
    passed = (
        rss <= TARGET_RSS_BYTES
        and duplicate_creates == 0
        and creates == n_jobs
        and stored == n_jobs
    )
    return BenchResult(
        id="B3",
        title=f"{n_jobs} jobs in flight",
        value=round(rss / 2**20, 1),
        unit="MB worker RSS (peak)",
        target="worker RSS <= 1.5 GB, 0 duplicates, all complete",
        passed=passed,
        inputs={
            "jobs": n_jobs,
            "request": LONG_REQUEST,
            "emulator": f"time scale 1, --fixed-duration {duration:g}",
            "poll_settings": POLL_SETTINGS,
            "workers": f"submit+download and poll, threads x{concurrency} each",
            "worker_eta_task_limit": "default (NBQ_WORKER_ETA_TASK_LIMIT)",
        },
        raw={
            "peak_generating_at_once": peak_generating[0],
            "worker_rss_peak_mb": round(rss / 2**20, 1),
            "redis_used_memory_peak_mb": round(result.redis_peak_used_memory / 2**20, 1),
            "redis_used_memory_before_mb": round(
                int(result.redis_before["used_memory"]) / 2**20, 1
            ),
            "redis_bytes_per_in_flight_job": round(
                (result.redis_peak_used_memory - int(result.redis_before["used_memory"]))
                / max(1, peak_generating[0])
            ),
            "creates_accepted": creates,
            "duplicate_creates": duplicate_creates,
            "idempotent_repeats": int(stats.get("idempotent_repeats", 0)),
            "queries_total": queries,
            "polls_recorded": polls_recorded,
            "queries_beyond_recorded_polls": queries - polls_recorded,
            "polls_per_job": summary([float(r.polls) for r in result.records]),
            "duplicate_or_stale_deliveries": outcomes,
            "states": result.states,
            "elapsed_s": round(result.elapsed_s, 1),
            "worker_cpu_s": {k: round(v, 1) for k, v in result.worker_cpu_s.items()},
        },
    )
