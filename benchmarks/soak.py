"""Combined-fault soak: every promise kept, and recovery in about a fault's own length
(issue 26).

Real processes, wired as a deployment is: one Celery worker pool per queue the app
declares (``submit`` prefork, ``poll``/``download``/``notify`` threads, ``--per-pool``
workers each, as docs/operations.md runs them), the reconciler (``nbq reconcile``), the
emulator over HTTP ignoring ``Idempotency-Key`` (its default, as the vendor documents no
support), moto's S3 server and a redis-server with AOF (broker and job store). Callbacks
are off, so a create whose answer was lost ends ``outcome_unknown``. The recovery
settings are at their defaults (``NBQ_WORKER_LEASE_S=15``, ``NBQ_RECONCILE_INTERVAL_S=30``,
``NBQ_STUCK_AFTER_S=120``, ``NBQ_SUBMIT_TIME_LIMIT_S=90``, breaker probe at most 60 s).

``--jobs`` jobs are enqueued evenly over ``--duration`` seconds while a fault schedule
drawn from ``--seed`` runs: per pool a worker SIGKILLed (restarted ``--restart-delay``
later under the same name, as a container restart does) and a worker SIGSTOPped for
``--fault-s`` then resumed; a submit worker's prefork child SIGKILLed alone; Redis
SIGKILLed and restarted from its AOF; S3 frozen for ``--fault-s``; and emulator windows
(``/_emulator/faults``, ``/_emulator/credits``): 429s, 5xx on create and query, 402 (no
credits), create answers dropped after the task was made, connections dropped,
garbled 2xx, stalled creates and queries. Then it waits for every job to end and for the
broker's ``unacked`` hash to empty, and prints/writes:

* enqueue→stored p50/p95/max (the record's ``created_at`` → ``state_times["stored"]``);
* the longest stretch with jobs in flight and none stored;
* invariants: stuck jobs, creates paid twice (an idempotency key the emulator made more
  than one task for — the server ignores the key, so that is a resent create), S3
  objects that disagree with their record/manifest, failures without a reason;
* messages left in ``unacked`` at the end.

Targets (issue 26): invariants 0, p95 ≤ 60 s, max ≤ 120 s, ``unacked`` empty::

    python -m benchmarks.soak --seed 1 --out benchmarks/results/soak-1.json
    python -m benchmarks.soak --seed 1 --quick      # 40 jobs over 90 s, 15 s faults

It runs from a checkout: the servers and the stack are the tests' (``tests/support``).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.recovery_times import DEFAULTS
from nanobanana_queue.producers.errors import EnqueueUncertainError
from nanobanana_queue.workers.contract import DECLARED_QUEUES, QUEUE_SUBMIT
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import image_mismatches, kill_hard
from tests.support.emulator_server import EmulatorServer
from tests.support.procs import child_pids, start, stop
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server
from tests.support.stack import Stack

#: The pool each queue runs on in production (docs/operations.md), smaller concurrency.
POOLS: dict[str, tuple[str, int]] = {
    "submit": ("prefork", 2),
    "poll": ("threads", 8),
    "download": ("threads", 4),
    "notify": ("threads", 2),
}
#: Timings a deployment would use with an API that answers in seconds (the emulator at
#: ``--time-scale 0.1``); the recovery settings stay at their defaults (DEFAULTS).
SOAK_SETTINGS = {
    **DEFAULTS,
    "NBQ_POLL_MIN_INTERVAL_S": "1",
    "NBQ_POLL_MAX_INTERVAL_S": "5",
    "NBQ_DEFAULT_ESTIMATED_TIME_S": "5",
    "NBQ_RETRY_BACKOFF_BASE_S": "1",
    "NBQ_RETRY_BACKOFF_MAX_S": "20",
    "NBQ_BREAKER_PROBE_INTERVAL_S": "60",
    "NBQ_HTTP_READ_TIMEOUT_S": "15",
    "NBQ_HTTP_CONNECT_TIMEOUT_S": "5",
    "NBQ_DOWNLOAD_TIMEOUT_S": "30",
    "NBQ_VISIBILITY_TIMEOUT_S": "3600",
    "NBQ_WORKER_LEASE_S": "15",
}
EMULATOR_ARGS = ["--time-scale", "0.1", "--max-pixels", "65536"]
PROMPT = "soak"


@dataclass
class Event:
    at: float
    name: str
    run: Callable[[], None] = field(compare=False)

    def __lt__(self, other: Event) -> bool:
        return self.at < other.at


@dataclass
class Soak:
    """The running system and the clock of its schedule."""

    stack: Stack
    per_pool: int
    restart_delay_s: float
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    reconciler: subprocess.Popen[bytes] | None = None
    events: list[Event] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    t0: float = 0.0

    # -- processes -------------------------------------------------------------------
    def start_pools(self) -> None:
        for queue in DECLARED_QUEUES:
            for i in range(self.per_pool if queue != "notify" else 1):
                self.spawn(f"{queue}-{i + 1}")
        self.reconciler = start(
            [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "reconcile"],
            env=self.stack.env(),
            log=self.stack.dir / "worker-reconciler.log",
        )

    def spawn(self, name: str) -> None:
        queue = name.rsplit("-", 1)[0]
        pool, concurrency = POOLS.get(queue, ("threads", 2))
        self.workers[name] = self.stack.spawn_worker(
            queues=queue, pool=pool, concurrency=concurrency, name=name
        )

    def pick(self, rng: random.Random, queue: str) -> str:
        return rng.choice(sorted(n for n in self.workers if n.rsplit("-", 1)[0] == queue))

    # -- schedule --------------------------------------------------------------------
    def at(self, offset_s: float, name: str, run: Callable[[], None]) -> None:
        heapq.heappush(self.events, Event(self.t0 + offset_s, name, run))

    def note(self, what: str, **fields: Any) -> None:
        entry = {"t": round(time.time() - self.t0, 1), "event": what, **fields}
        self.log.append(entry)
        print(f"[{entry['t']:7.1f}s] {what} {fields if fields else ''}", flush=True)

    def run_until_empty(self, tick: Callable[[], None] | None = None) -> None:
        while self.events:
            event = self.events[0]
            delay = event.at - time.time()
            if delay > 0:
                time.sleep(min(delay, 0.5))
                if tick is not None:
                    tick()
                continue
            heapq.heappop(self.events)
            try:
                event.run()
            except Exception as exc:  # a fault action failing is itself worth seeing
                self.note("action_failed", action=event.name, error=repr(exc))

    # -- faults ----------------------------------------------------------------------
    def sigkill(self, name: str) -> None:
        proc = self.workers[name]
        kill_hard(proc)
        self.stack.workers.remove(proc)
        self.note("sigkill", worker=name)

        def restart() -> None:
            self.spawn(name)
            self.note("restarted", worker=name)

        self.at(time.time() - self.t0 + self.restart_delay_s, f"restart {name}", restart)

    def sigkill_child(self, name: str) -> None:
        children = child_pids(self.workers[name].pid)
        if not children:
            self.note("no_child_to_kill", worker=name)
            return
        os.kill(children[0], signal.SIGKILL)
        self.note("sigkill_child", worker=name, pid=children[0])

    def freeze(self, name: str, seconds: float) -> None:
        proc = self.workers[name]
        os.killpg(proc.pid, signal.SIGSTOP)
        self.note("sigstop", worker=name, seconds=seconds)

        def thaw() -> None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
            self.note("sigcont", worker=name)

        self.at(time.time() - self.t0 + seconds, f"sigcont {name}", thaw)

    def redis_crash(self, down_s: float) -> None:
        self.stack.redis.kill()
        self.note("redis_killed")

        def back() -> None:
            self.stack.redis.start()
            self.note("redis_restarted")

        self.at(time.time() - self.t0 + down_s, "redis start", back)

    def s3_outage(self, seconds: float) -> None:
        self.stack.s3.pause()
        self.note("s3_paused", seconds=seconds)

        def resume() -> None:
            self.stack.s3.resume()
            self.note("s3_resumed")

        self.at(time.time() - self.t0 + seconds, "s3 resume", resume)

    def api_window(self, name: str, rules: list[dict[str, Any]], seconds: float) -> None:
        emulator = self.stack.emulator
        ids = [emulator.add_fault(**rule)["id"] for rule in rules]
        self.note("api_window", kind=name, seconds=seconds)

        def close() -> None:
            for rule_id in ids:
                emulator.delete_fault(rule_id)
            self.note("api_window_closed", kind=name)

        self.at(time.time() - self.t0 + seconds, f"close {name}", close)

    def no_credits(self, seconds: float) -> None:
        self.stack.emulator.set_credits(0)
        self.note("api_402", seconds=seconds)

        def back() -> None:
            self.stack.emulator.set_credits(None)
            self.note("credits_back")

        self.at(time.time() - self.t0 + seconds, "credits back", back)

    def api_once(self, name: str, rule: dict[str, Any]) -> None:
        self.stack.emulator.add_fault(**rule)
        self.note("api_fault", kind=name, count=rule.get("count"))


def _kill_one(soak: Soak, rng: random.Random, queue: str) -> None:
    soak.sigkill(soak.pick(rng, queue))


def _freeze_one(soak: Soak, rng: random.Random, queue: str, seconds: float) -> None:
    soak.freeze(soak.pick(rng, queue), seconds)


def fault_schedule(soak: Soak, rng: random.Random, duration_s: float, fault_s: float) -> list[str]:
    """Every fault of the mix once, at seeded times spread over the middle of the run."""
    faults: list[tuple[str, Callable[[], None]]] = []
    for queue in DECLARED_QUEUES:
        faults.append((f"sigkill {queue}", partial(_kill_one, soak, rng, queue)))
        faults.append((f"sigstop {queue}", partial(_freeze_one, soak, rng, queue, fault_s)))
    faults.append(
        ("sigkill submit child", lambda: soak.sigkill_child(soak.pick(rng, QUEUE_SUBMIT)))
    )
    faults.append(("redis kill+restart", lambda: soak.redis_crash(2.0)))
    faults.append(("s3 unreachable", lambda: soak.s3_outage(fault_s)))
    window = fault_s * 2 / 3
    match = {"match": PROMPT}
    faults += [
        ("api 429", lambda: soak.api_window("429", [
            {"endpoint": "create", "action": "status", "status": 429, "retry_after": 20,
             "probability": 0.5, **match}], window)),
        ("api 5xx", lambda: soak.api_window("5xx", [
            {"endpoint": "create", "action": "status", "status": 503, "probability": 0.3,
             **match},
            {"endpoint": "query", "action": "status", "status": 500, "probability": 0.3}],
            window)),
        ("api 402", lambda: soak.no_credits(window)),
        ("api drop after create", lambda: soak.api_once("drop_after_create", {
            "endpoint": "create", "action": "drop_after_create", "count": 2, **match})),
        ("api drop connection", lambda: soak.api_once("drop_connection", {
            "endpoint": "create", "action": "drop_connection", "count": 2, **match})),
        ("api garbled 2xx", lambda: soak.api_once("malformed_json", {
            "endpoint": "create", "action": "malformed_json", "count": 2, **match})),
        ("api stalled create", lambda: soak.api_once("stall_create", {
            "endpoint": "create", "action": "delay", "seconds": 20.0, "count": 2, **match})),
        ("api stalled query", lambda: soak.api_once("stall_query", {
            "endpoint": "query", "action": "delay", "seconds": 20.0, "count": 3})),
    ]  # fmt: skip
    rng.shuffle(faults)
    first, last = 0.1 * duration_s, 0.8 * duration_s
    step = (last - first) / len(faults)
    planned = []
    for i, (name, run) in enumerate(faults):
        offset = first + step * (i + rng.random())
        soak.at(offset, name, run)
        planned.append(f"{offset:6.1f}s {name}")
    return planned


def enqueue_schedule(soak: Soak, jobs: int, duration_s: float, ids: list[str]) -> None:
    """One job every ``duration/jobs`` seconds; an enqueue refused (Redis down) is tried
    again half a second later, as a producer would — an uncertain one with its own job
    id (the id is the enqueue's idempotency key), so no job is left untracked."""
    producer = soak.stack.producer()

    def enqueue(i: int, job_id: str | None = None) -> None:
        try:
            handle = producer.enqueue({"prompt": f"{PROMPT} {i}", "quality": "1K"}, job_id=job_id)
            ids.append(handle.job_id)
        except EnqueueUncertainError as exc:
            soak.note("enqueue_retry", job=i, error=type(exc).__name__, job_id=exc.job_id)
            soak.at(time.time() - soak.t0 + 0.5, f"enqueue {i}", partial(enqueue, i, exc.job_id))
        except Exception as exc:
            soak.note("enqueue_retry", job=i, error=type(exc).__name__)
            soak.at(time.time() - soak.t0 + 0.5, f"enqueue {i}", partial(enqueue, i, job_id))

    for i in range(jobs):
        soak.at(duration_s * i / jobs, f"enqueue {i}", partial(enqueue, i))


def read_records(stack: Stack, ids: list[str]) -> dict[str, JobRecord]:
    producer = stack.producer()
    return {job_id: producer.status(job_id) for job_id in ids}


def wait_for_end(stack: Stack, ids: list[str], timeout_s: float) -> dict[str, JobRecord]:
    """Every job's record once all are terminal, or at ``timeout_s`` (the rest: stuck)."""
    deadline = time.time() + timeout_s
    producer = stack.producer()
    records: dict[str, JobRecord] = {}
    while True:
        try:
            for job_id in ids:
                if job_id not in records or not records[job_id].is_terminal:
                    records[job_id] = producer.status(job_id)
        except Exception:
            pass
        if (len(records) == len(ids) and all(r.is_terminal for r in records.values())) or (
            time.time() > deadline
        ):
            return records
        time.sleep(1.0)


def stored_at(record: JobRecord) -> float | None:
    return record.state_times.get(JobState.STORED.value)


def ended_at(record: JobRecord) -> float | None:
    if not record.is_terminal:
        return None
    return record.state_times.get(record.state.value, record.updated_at)


def longest_stall(records: dict[str, JobRecord]) -> float:
    """The longest stretch with at least one job in flight and none stored."""
    events: list[tuple[float, int, bool]] = []  # (time, +1 start / -1 end, stored)
    for record in records.values():
        events.append((record.created_at, +1, False))
        end = ended_at(record)
        if end is not None:
            events.append((end, -1, record.state is JobState.STORED))
    events.sort(key=lambda e: (e[0], -e[1]))
    in_flight, since, longest = 0, None, 0.0
    for t, delta, stored in events:
        if delta > 0:
            if in_flight == 0:
                since = t
            in_flight += 1
            continue
        in_flight -= 1
        if since is not None:
            longest = max(longest, t - since)
        since = t if (stored and in_flight > 0) else (since if in_flight > 0 else None)
    return longest


def slowest(records: dict[str, JobRecord], n: int) -> list[dict[str, Any]]:
    """The ``n`` jobs slowest to end, with when each state was entered (s after enqueue)
    and what they waited for: where the time went."""
    ended = [(ended_at(r) or time.time()) - r.created_at for r in records.values()]
    order = sorted(zip(ended, records.values(), strict=True), key=lambda p: -p[0])[:n]
    return [
        {
            "job_id": r.job_id,
            "state": r.state.value,
            "s": round(took, 1),
            "states": {
                k: round(v - r.created_at, 1)
                for k, v in sorted(r.state_times.items(), key=lambda kv: kv[1])
            },
            "attempts": r.attempts,
            "polls": r.polls,
            "waiting_reason": r.waiting_reason,
            "error": r.error.code if r.error else None,
            "recovered_at": round(r.recovered_at - r.created_at, 1) if r.recovered_at else None,
        }
        for took, r in order
    ]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(
    stack: Stack, records: dict[str, JobRecord], unacked_end: int, unacked_first: int
) -> dict[str, Any]:
    latencies = [at - r.created_at for r in records.values() if (at := stored_at(r)) is not None]
    stats = stack.emulator.stats()
    by_key: dict[str, int] = stats["creates_by_idempotency_key"]
    ids = set(records)
    paid_twice = sorted(
        key for key, n in by_key.items() if n > 1 and key[4:].rsplit("-", 1)[0] in ids
    )
    failures = Counter(
        (r.error.code if r.error else "no_error")
        for r in records.values()
        if r.state is JobState.FAILED
    )
    reasonless = [
        j for j, r in records.items()
        if r.state is JobState.FAILED
        and (r.error is None or not r.error.code or not r.error.message)
    ]  # fmt: skip
    stuck = sorted(j for j, r in records.items() if not r.is_terminal)
    mismatched = image_mismatches(stack.s3, records)
    return {
        "jobs": len(records),
        "stored": len(latencies),
        "failed": dict(failures),
        "enqueue_to_stored_s": {
            "p50": round(percentile(latencies, 0.50), 1),
            "p95": round(percentile(latencies, 0.95), 1),
            "max": round(max(latencies), 1) if latencies else None,
            "mean": round(statistics.fmean(latencies), 1) if latencies else None,
        },
        "longest_stall_s": round(longest_stall(records), 1),
        "invariants": {
            "stuck": len(stuck),
            "paid_twice": len(paid_twice),
            "s3_mismatch": len(mismatched),
            "failures_without_reason": len(reasonless),
        },
        "invariant_details": {
            "stuck": {j: records[j].state.value for j in stuck},
            "paid_twice": paid_twice,
            "s3_mismatch": mismatched,
            "failures_without_reason": reasonless,
        },
        "slowest": slowest(records, 10),
        "creates_accepted": stats.get("creates_accepted"),
        "unacked_when_all_ended": unacked_first,
        "unacked_at_end": unacked_end,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of enqueues")
    parser.add_argument("--fault-s", type=float, default=30.0, help="SIGSTOP / S3 outage")
    parser.add_argument("--per-pool", type=int, default=2, help="workers per stage pool")
    parser.add_argument("--restart-delay", type=float, default=5.0)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="40 jobs / 90 s / 15 s faults")
    parser.add_argument("--no-faults", action="store_true", help="the baseline")
    parser.add_argument("--lease", type=float, default=None, help="NBQ_WORKER_LEASE_S")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.duration, args.fault_s = 40, 90.0, 15.0
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix=f"nbq-soak-{args.seed}-"))
    print(f"soak: seed {args.seed}, {args.jobs} jobs over {args.duration:.0f} s; logs in {base}")
    emulator = EmulatorServer(log_dir=base, extra_args=[*EMULATOR_ARGS, "--seed", str(args.seed)])
    s3 = S3Server(dir=base / "s3")
    (base / "s3").mkdir()
    redis_dir = base / "redis"
    redis_dir.mkdir()
    server = RedisServer(dir=redis_dir)
    stack = Stack(redis=server, s3=s3, emulator=emulator, dir=base)
    stack.overrides.update(SOAK_SETTINGS)
    if args.lease is not None:
        stack.overrides["NBQ_WORKER_LEASE_S"] = str(args.lease)
    soak = Soak(stack=stack, per_pool=args.per_pool, restart_delay_s=args.restart_delay)
    started = time.time()
    try:
        emulator.start()
        s3.start()
        server.start()
        assert emulator.stats()["honour_idempotency"] is False
        soak.start_pools()
        time.sleep(10)  # the pools connect (a real deployment is up before its load)
        soak.t0 = time.time()
        ids: list[str] = []
        enqueue_schedule(soak, args.jobs, args.duration, ids)
        planned = [] if args.no_faults else fault_schedule(soak, rng, args.duration, args.fault_s)
        print("fault schedule:\n  " + "\n  ".join(planned), flush=True)
        soak.run_until_empty()
        soak.note("schedule_done", jobs=len(ids))
        records = wait_for_end(stack, ids, args.drain_timeout)
        soak.note("all_ended" if all(r.is_terminal for r in records.values()) else "drain_timeout")
        client = server.client()
        unacked_first = int(client.hlen("unacked"))
        settle_until = time.time() + 3 * float(stack.overrides["NBQ_WORKER_LEASE_S"] or 15) + 5
        while time.time() < settle_until and client.hlen("unacked"):
            time.sleep(1)
        result = measure(stack, records, int(client.hlen("unacked")), unacked_first)
    finally:
        for proc in list(stack.workers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
        stack.stop_workers()
        if soak.reconciler is not None:
            stop(soak.reconciler)
        if s3.proc is not None:
            s3.resume()
        s3.stop()
        server.stop()
        emulator.stop()
    result.update(
        {
            "seed": args.seed,
            "settings": {"jobs": args.jobs, "duration_s": args.duration,
                         "fault_s": args.fault_s, "per_pool": args.per_pool,
                         "faults": not args.no_faults, **SOAK_SETTINGS, **stack.overrides},
            "schedule": planned,
            "timeline": soak.log,
            "wall_s": round(time.time() - started, 1),
            "logs": str(base),
            "targets_met": {},
        }
    )  # fmt: skip
    lat = result["enqueue_to_stored_s"]
    result["targets_met"] = {
        "invariants_0": not any(result["invariants"].values()),
        "p95_le_60s": lat["p95"] <= 60,
        "max_le_120s": lat["max"] is not None and lat["max"] <= 120,
        "unacked_empty": result["unacked_at_end"] == 0,
    }
    summary = {k: result[k] for k in (
        "jobs", "stored", "failed", "enqueue_to_stored_s", "longest_stall_s", "invariants",
        "creates_accepted", "unacked_when_all_ended", "unacked_at_end", "targets_met")}  # fmt: skip
    print(json.dumps(summary, indent=2), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
