"""Redis commands per job, by command: where B1's ~139 commands per job go.

    python -m benchmarks.redis_commands [--jobs 300] [--out PATH] [--monitor]

The capacity run's layout (one worker per queue, threads x8, time scale 0.001) on a
benchmark-owned Redis; ``INFO commandstats`` before and after the measured jobs (30 warm-up
jobs first). Prints the per-job table, writes JSON (default
benchmarks/results/redis-commands.json). Idle traffic (BRPOP wake-ups, kombu's restore
sweeps, events) is part of it, as in B1's figure. ``--monitor`` adds a breakdown by
command and key pattern (ids replaced by ``*``; ``lua:`` marks commands a script ran) from
``MONITOR`` on the broker/store Redis: it says which component a round trip belongs to,
summed per component (``by_component``: job store, fair share, credits, metrics,
Celery/kombu, gates, the benchmark's own progress polling, other) against the budget of
``BUDGET_PER_JOB`` commands per job (issue 24), printed as a pass/over line.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.harness import bench_stack
from benchmarks.pipeline_run import run_jobs

TIME_SCALE = 0.001
OUT = Path(__file__).resolve().parent / "results" / "redis-commands.json"
CLUSTER_OUT = OUT.with_name("redis-commands-cluster.json")


def _calls(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--monitor", action="store_true", help="per command and key pattern, from MONITOR"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the job store on a 3-master Redis Cluster (the broker stays one Redis): "
        "commands per job per cluster node",
    )
    args = parser.parse_args(argv)
    args.out = args.out or (CLUSTER_OUT if args.cluster else OUT)
    workdir = Path(tempfile.mkdtemp(prefix="nbq-commands-"))
    cluster = None
    overrides: dict[str, str] = {}
    if args.cluster:
        from tests.support.redis_cluster import RedisCluster

        cluster = RedisCluster(dir=workdir / "cluster")
        cluster.start()
        overrides["NBQ_REDIS_URL"] = cluster.url
    try:
        return _measure(args, workdir, cluster, overrides)
    finally:
        if cluster is not None:
            cluster.stop()


_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}|\d+(\.\d+)?"
)
#: Keys named by an id no ``_ID`` shape catches (the API's task ids, worker names).
_TAIL = re.compile(r"(:task:|:held:).+")
_HEAD = re.compile(r"^\S+ \[\d+ ([^\]]+)\] ")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


#: Redis commands per job the whole pipeline may cost (issue 24): ``--monitor`` prints the
#: total against it.
BUDGET_PER_JOB = 80

#: ``by_component``'s keys, in print order.
COMPONENTS = (
    "job store",
    "fair share",
    "credits",
    "metrics",
    "celery/kombu",
    "gates",
    "benchmark polling",
    "other",
)
#: A key (the prefix and a shard tag ``{s*}`` taken off) -> its component, first match.
_BY_KEY = (
    # records, state indexes, producer indexes, the end's PUBLISH to waiters, the outbox,
    # a paid task's owner (task:<id>), the store's epoch marker
    (re.compile(r"^(job|state|producer|jobend|notify|task|store)\b"), "job store"),
    (re.compile(r"^fair\b"), "fair share"),
    (re.compile(r"^credit"), "credits"),
    (re.compile(r"^metrics:"), "metrics"),
    (re.compile(r"^(breaker|limit)\b"), "gates"),
)
#: kombu's own keys: the unacked hash and index, bindings, events, pidbox replies.
_KOMBU = re.compile(r"^(unacked|_kombu\.|/\*\.celeryev/|celery\b|.*\.pidbox$)")
#: Commands kombu sends without a key of ours (MULTI/EXEC of its declarations, restores).
_KOMBU_COMMANDS = frozenset({"BRPOP", "LPUSH", "RPUSH", "MULTI", "EXEC", "WATCH", "UNWATCH"})


def component(name: str, *, prefix: str = "nbq", queues: tuple[str, ...] = ()) -> str:
    """A ``pattern`` (``[lua:]COMMAND key-pattern``) -> the component it belongs to.

    ``queues`` are the broker queue names (their lists and kombu's priority lists
    ``<queue>\\x06\\x16<n>`` are Celery's). ``ZCARD`` of a state index and ``INFO``
    sent by a client (not a script) are the benchmark's own progress polling
    (benchmarks/pipeline_run.py), apart so that they are not charged to the store.
    """
    scripted = name.startswith("lua:")
    command, _, key = name.removeprefix("lua:").partition(" ")
    if not scripted and (command == "INFO" or (command == "ZCARD" and ":state:" in key)):
        return "benchmark polling"
    if key.startswith(f"{prefix}:"):
        rest = re.sub(r"^\{s[^}]*\}:", "", key[len(prefix) + 1 :])
        for rule, where in _BY_KEY:
            if rule.search(rest):
                return where
        return "other"
    if key and (_KOMBU.search(key) or key.split("\\x", 1)[0] in queues):
        return "celery/kombu"
    if command in _KOMBU_COMMANDS:
        return "celery/kombu"
    return "other"


def by_component(
    counts: Counter[str], jobs: int, *, prefix: str = "nbq", queues: tuple[str, ...] = ()
) -> dict[str, float]:
    """MONITOR's counts per pattern -> commands per job per component (every pattern,
    also those too rare for ``by_pattern``)."""
    sums: Counter[str] = Counter()
    for name, count in counts.items():
        sums[component(name, prefix=prefix, queues=queues)] += count
    return {where: round(sums[where] / jobs, 2) for where in COMPONENTS}


def budget_line(total: float, budget: int = BUDGET_PER_JOB) -> str:
    verdict = "pass" if total <= budget else f"OVER by {total - budget:.1f}"
    return f"budget {budget} commands per job: {total} -> {verdict}"


def pattern(line: str) -> str | None:
    """``MONITOR`` line -> ``[lua:]COMMAND key-pattern`` (ids and numbers as ``*``).

    For EVAL/EVALSHA the key is the script's first key.
    """
    return _parse(line, keyed=False)


def key_of(line: str) -> str | None:
    """``MONITOR`` line -> the key it touched, as is (hot keys); None without a key."""
    return _parse(line, keyed=True) or None


def _parse(line: str, *, keyed: bool) -> str | None:
    head = _HEAD.match(line)
    if head is None:
        return None
    args = _ARG.findall(line, head.end())
    if not args:
        return None
    command = args[0].upper()
    key_at = 3 if command in ("EVAL", "EVALSHA") else 1
    key = args[key_at] if len(args) > key_at else ""
    if keyed:
        return key
    prefix = "lua:" if head.group(1) == "lua" else ""
    key = _TAIL.sub(r"\1*", _ID.sub("*", key))
    return f"{prefix}{command} {key[:60]}".rstrip()


class Monitor:
    """``MONITOR`` on one Redis in a thread: counts ``pattern`` (or, keyed, the key) of
    every command it sees."""

    def __init__(self, client: Any, *, keyed: bool = False) -> None:
        self.client = client
        self._name = key_of if keyed else pattern
        self.counts: Counter[str] = Counter()
        self.recording = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            connection = monitor.connection
            while not self._stop.is_set():
                response = connection.read_response()
                line = response.decode() if isinstance(response, bytes) else str(response)
                if self.recording:
                    name = self._name(line)
                    if name is not None:
                        self.counts[name] += 1

    def stop(self) -> None:
        self.recording = False
        self._stop.set()


def _node_calls(cluster: Any) -> dict[int, dict[str, int]]:
    return {port: _calls(cluster.node(port)) for port in cluster.procs}


def _measure(args: Any, workdir: Path, cluster: Any, overrides: dict[str, str]) -> int:
    with bench_stack(workdir, TIME_SCALE, overrides=overrides) as stack:
        pids = {
            queue: stack.start_worker(queues=queue, concurrency=args.concurrency, name=queue).pid
            for queue in ("submit", "poll", "download")
        }
        run_jobs(stack, 30, workers=pids, timeout_s=120, fetch_records=False)
        client = stack.redis.client()
        monitor = Monitor(stack.redis.client()) if args.monitor else None
        if monitor is not None:
            monitor.start()
            monitor.recording = True
        nodes_before = _node_calls(cluster) if cluster is not None else {}
        before = _calls(client)
        processed = int(client.info("stats")["total_commands_processed"])
        result = run_jobs(stack, args.jobs, workers=pids, timeout_s=600, fetch_records=False)
        after = _calls(client)
        processed = int(client.info("stats")["total_commands_processed"]) - processed
        nodes_after = _node_calls(cluster) if cluster is not None else {}
        if monitor is not None:
            monitor.stop()
            client.ping()
    n = args.jobs
    per_job = {
        name: round((after[name] - before.get(name, 0)) / n, 2)
        for name in sorted(after, key=lambda c: before.get(c, 0) - after[c])
        if after[name] - before.get(name, 0) > 0
    }
    total = round(sum(per_job.values()), 1)
    out = {
        "jobs": n,
        "jobs_per_s": round(result.jobs_per_s, 1),
        "total": total,
        "total_commands_processed": round(processed / n, 1),
        "per_job": per_job,
    }
    if monitor is not None:
        out["by_pattern"] = {
            name: round(count / n, 2)
            for name, count in monitor.counts.most_common()
            if count / n >= 0.05
        }
        from nanobanana_queue.workers.contract import DECLARED_QUEUES

        queues = (*DECLARED_QUEUES, "celery")
        out["by_component"] = by_component(monitor.counts, n, queues=queues)
        # what "other" holds, down to the rare patterns by_pattern leaves out
        out["other_patterns"] = {
            name: round(count / n, 3)
            for name, count in monitor.counts.most_common()
            if component(name, queues=queues) == "other" and count / n >= 0.005
        }
        # the store's commands are on the cluster's nodes, not in MONITOR of the broker
        budgeted = out["total"] if cluster is None else None
        out["budget"] = {
            "per_job": BUDGET_PER_JOB,
            "total": budgeted,
            "pass": None if budgeted is None else budgeted <= BUDGET_PER_JOB,
        }
    if cluster is not None:
        # ZCARD is the benchmark's own progress polling (every shard, every 50 ms): apart.
        out["store_nodes_per_job"] = {
            str(port): {
                "commands": round(
                    sum(v - nodes_before[port].get(c, 0) for c, v in calls.items() if c != "zcard")
                    / n,
                    1,
                ),
                "progress_polling_zcard": round(
                    (calls.get("zcard", 0) - nodes_before[port].get("zcard", 0)) / n, 1
                ),
            }
            for port, calls in nodes_after.items()
        }
        out["broker_per_job"] = out.pop("total")
    print(
        f"{total} Redis commands per job {'on the broker ' if cluster else ''}by commandstats, "
        f"{out['total_commands_processed']} by total_commands_processed "
        f"({n} jobs, {out['jobs_per_s']} jobs/s)"
    )
    for port, figures in out.get("store_nodes_per_job", {}).items():
        print(f"  store node {port}: {figures}")
    for name, value in per_job.items():
        print(f"  {name:<24} {value:>7}")
    for name, value in out.get("by_pattern", {}).items():
        print(f"  {name:<64} {value:>7}")
    if "by_component" in out:
        print("by component (commands per job, MONITOR):")
        for name, value in out["by_component"].items():
            print(f"  {name:<24} {value:>7}")
        print(f"  {'sum':<24} {round(sum(out['by_component'].values()), 1):>7}")
        if out["budget"]["total"] is not None:
            print(budget_line(out["budget"]["total"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
