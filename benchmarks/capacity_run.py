"""The capacity model's check: one large simulated run with a worker pool per queue.

    python -m benchmarks.capacity_run --jobs 20000 [--patched]
    python -m benchmarks.capacity_run --jobs 40000 --cluster   # -> capacity-cluster.json

Three worker processes (submit, poll, download; threads x8 each) so each stage's CPU is
its own process's CPU time. Writes per-job figures to
``benchmarks/results/capacity.json``; docs/capacity.md scales them to 1M and 100M jobs/day.

``--cluster``: the job store on a 3-master Redis Cluster (the broker stays one Redis, as
it must: the supported combinations in docs/operations.md), with figures per master:
commands/s and commands per job (the benchmark's own progress ZCARDs apart), of them the
``HINCRBY``/``HINCRBYFLOAT`` (metric hashes, state counters), keys and memory, the logical
store shards
(NBQ_STORE_SHARDS hash tags) it holds, and its hottest keys from a MONITOR sample.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.b1_throughput import EventCounter
from benchmarks.harness import bench_stack
from benchmarks.pipeline_run import api_calls, run_jobs, summary

TIME_SCALE = 0.001
OUT = Path(__file__).resolve().parent / "results" / "capacity.json"
CLUSTER_OUT = OUT.with_name("capacity-cluster.json")
#: Seconds of MONITOR per master for the hot-key sample (MONITOR costs the node CPU).
HOT_KEY_SAMPLE_S = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--timeout-s", type=float, default=None, help="default: 1800 s or 50 ms per job"
    )
    parser.add_argument("--patched", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--cluster", action="store_true", help="the job store on a 3-master Redis Cluster"
    )
    args = parser.parse_args(argv)
    args.out = args.out or (CLUSTER_OUT if args.cluster else OUT)
    if args.patched:
        harness.WORKER_MODULE[0] = "benchmarks.patched_worker"
    workdir = Path(tempfile.mkdtemp(prefix="nbq-capacity-"))
    if not args.cluster:
        return _run(args, workdir, None)
    from tests.support.redis_cluster import RedisCluster

    cluster = RedisCluster(dir=workdir / "cluster")
    cluster.start()
    try:
        return _run(args, workdir, cluster)
    finally:
        cluster.stop()


def _run(args: argparse.Namespace, workdir: Path, cluster: Any) -> int:
    overrides = {"NBQ_REDIS_URL": cluster.url} if cluster is not None else {}
    with bench_stack(workdir, TIME_SCALE, overrides=overrides) as stack:
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
        nodes_before = _nodes(cluster) if cluster is not None else {}
        sampler = _HotKeys(cluster) if cluster is not None else None
        if sampler is not None:
            sampler.start()
        result = run_jobs(
            stack,
            args.jobs,
            workers=pids,
            timeout_s=timeout_s,
            # On a cluster the progress check is 64 shards x 5 states ZCARDs: once a second.
            progress_interval_s=1.0 if cluster is not None else 0.05,
        )
        nodes_after = _nodes(cluster) if cluster is not None else {}
        reconciler_resends = _reconciler_resends(stack)
        time.sleep(1.0)
        event_kinds = events.stop()
        memory_after = int(client.info("memory")["used_memory"])
        queue_len = {q: int(client.llen(q)) for q in ("submit", "poll", "download")}
    n = args.jobs
    calls = api_calls(result)
    bytes_served = result.emulator_delta("file_bytes_served")
    memory_before = int(result.redis_before["used_memory"])
    report: dict[str, Any] = {
        "command": "python -m benchmarks.capacity_run --jobs "
        + f"{n}{' --patched' if args.patched else ''}{' --cluster' if cluster else ''}",
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
    if cluster is not None:
        assert sampler is not None
        # INFO of the broker Redis above: on a cluster store it is the broker alone.
        report["per_job"]["broker_redis_commands"] = report["per_job"].pop("redis_commands")
        report["store_masters"] = _per_master(
            nodes_before, nodes_after, n, result.elapsed_s, sampler.hot(), _slots(cluster)
        )
        masters = report["store_masters"].values()
        report["per_job"]["store_commands_all_masters"] = round(
            sum(m["commands_per_job"] for m in masters), 1
        )
        report["store_shards"] = int(os.environ.get("NBQ_STORE_SHARDS", "64"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


def _nodes(cluster: Any) -> dict[int, dict[str, Any]]:
    """Per master: command calls by name, memory and keys (INFO, one node at a time)."""
    out: dict[int, dict[str, Any]] = {}
    for port in cluster.procs:
        node = cluster.node(port)
        stats = node.info("commandstats")
        out[port] = {
            "calls": {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()},
            "used_memory": int(node.info("memory")["used_memory"]),
            "keys": int(node.dbsize()),
        }
    return out


def _slots(cluster: Any) -> dict[int, tuple[int, int]]:
    """Per master: (hash slots, NBQ_STORE_SHARDS shards) it owns."""
    shards = int(os.environ.get("NBQ_STORE_SHARDS", "64"))
    node = cluster.node(next(iter(cluster.procs)))
    owned: dict[int, tuple[int, int]] = {}
    for start, end, master, *_ in node.execute_command("CLUSTER", "SLOTS"):
        port = int(master[1])
        slots, n_shards = owned.get(port, (0, 0))
        owned[port] = (slots + end - start + 1, n_shards)
    for shard in range(shards):
        port = cluster.master_of(f"nbq:{{s{shard}}}:x")
        slots, n_shards = owned[port]
        owned[port] = (slots, n_shards + 1)
    return owned


class _HotKeys:
    """MONITOR on every master for ``HOT_KEY_SAMPLE_S`` once the run is under way."""

    def __init__(self, cluster: Any) -> None:
        from benchmarks.redis_commands import Monitor

        self.monitors = {port: Monitor(cluster.node(port), keyed=True) for port in cluster.procs}
        self._timer = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        for monitor in self.monitors.values():
            monitor.start()
        self._timer.start()

    def _sample(self) -> None:
        time.sleep(20.0)  # past the enqueue burst's start: every stage busy
        for monitor in self.monitors.values():
            monitor.recording = True
        time.sleep(HOT_KEY_SAMPLE_S)
        for monitor in self.monitors.values():
            monitor.stop()
            monitor.client.ping()

    def hot(self) -> dict[int, dict[str, Any]]:
        self._timer.join(timeout=HOT_KEY_SAMPLE_S + 30)
        out: dict[int, dict[str, Any]] = {}
        for port, monitor in self.monitors.items():
            total = sum(monitor.counts.values()) or 1
            out[port] = {
                "sampled_commands": total,
                "top_keys": {
                    key: f"{count / total:.1%}" for key, count in monitor.counts.most_common(5)
                },
            }
        return out


def _per_master(
    before: dict[int, dict[str, Any]],
    after: dict[int, dict[str, Any]],
    n: int,
    elapsed_s: float,
    hot: dict[int, dict[str, Any]],
    owned: dict[int, tuple[int, int]],
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for port, figures in after.items():
        calls_before = before[port]["calls"]
        commands = sum(
            v - calls_before.get(c, 0) for c, v in figures["calls"].items() if c != "zcard"
        )
        slots, shards = owned.get(port, (0, 0))
        # The metric hashes' writes (and the scripts' state counter HINCRBY): their split
        # over the masters shows whether a metric is still one hot key.
        metric_writes = sum(
            figures["calls"].get(c, 0) - calls_before.get(c, 0) for c in ("hincrby", "hincrbyfloat")
        )
        out[str(port)] = {
            "hash_slots": slots,
            "store_shards": shards,
            "commands_per_job": round(commands / n, 1),
            "hincrby_per_job": round(metric_writes / n, 1),
            "commands_per_s": round(commands / elapsed_s),
            "progress_zcard_per_job": round(
                (figures["calls"].get("zcard", 0) - calls_before.get("zcard", 0)) / n, 2
            ),
            "keys_after": figures["keys"],
            "used_memory_mb_after": round(figures["used_memory"] / 2**20, 1),
            "used_memory_growth_bytes_per_job": round(
                (figures["used_memory"] - before[port]["used_memory"]) / n
            ),
            **hot.get(port, {}),
        }
    return out


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
