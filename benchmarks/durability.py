"""Durability modes, measured: SIGKILL a redis-server under load and count what was lost.

    python -m benchmarks.durability            # every mode, ~3 minutes on 2 cores
    python -m benchmarks.durability --modes aof-everysec,aof-always --jobs 200

Each mode gets its own redis-server(s), moto S3, the emulator and one real worker
(threads, 8). A producer thread enqueues ``--jobs`` jobs at ``--rate`` per second; at
``--kill-at`` seconds the mode's Redis is SIGKILLed (no shutdown, no final fsync), stays
down ``--down`` seconds and comes back as the mode says. Then every accepted job is
followed to its end (or ``--settle`` seconds). Per mode:

* ``accepted``: enqueues that returned a job (refused ones raised to the caller: not lost);
* ``jobs_lost``: accepted jobs with no record and no manifest at the end, or never ending;
* ``paid_without_images``: tasks the emulator completed (paid) whose images are not in S3;
* ``extra_creates``: creates beyond one per job (a second payment);
* ``rescued`` / ``lost_reported`` / ``resets_detected``: the new metrics, read from Redis;
* ``recover_s``: from the restart until every accepted job that will end has ended.

Modes:

* ``volatile``: one Redis, no persistence (``nbq dev``'s; the issue's 300/300 case);
* ``aof-everysec``: one Redis, ``appendonly yes``, ``appendfsync everysec``;
* ``aof-always``: one Redis, ``appendfsync always``;
* ``replica-wait``: a primary without persistence plus one replica; the writes that
  matter wait for it (``NBQ_STORE_WAIT_REPLICAS=1``); "failover" = the primary comes back
  at its address from the replica's data (what Sentinel + a moving address gives);
* ``separate``: broker and store on two Redis, both AOF ``everysec``; the store is killed;
* ``separate-volatile``: the same with a store without persistence (rescue does the work).

Writes ``benchmarks/results/durability.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    EmulatorProc,
    S3Proc,
    start_proc,
    stop_proc,
    use_env,
    wait_worker,
)
from nanobanana_queue.devstack.procs import free_port, port_open, wait_until
from nanobanana_queue.devstack.redis_service import redis_server_binary

RESULTS = ROOT / "benchmarks" / "results" / "durability.json"
MODES = ("volatile", "aof-everysec", "aof-always", "replica-wait", "separate", "separate-volatile")
TIME_SCALE = 0.02  # 1K: ~0.4 s generation; enough jobs in flight at the kill


@dataclass
class Redis:
    """One benchmark redis-server whose options survive a SIGKILL and restart."""

    dir: Path
    options: list[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, extra: list[str] | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.dir), "--protected-mode", "no", *self.options, *(extra or [])]
        self.proc = start_proc(args, log=self.dir / "redis.log")
        wait_until(self._ready, timeout_s=60, what=f"redis {self.port}")

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            return bool(self.client().ping())
        except Exception:  # LOADING while the AOF replays
            return False

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def kill(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_proc(self.proc)
            self.proc = None


AOF_EVERYSEC = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
AOF_ALWAYS = ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
VOLATILE = ["--appendonly", "no", "--save", ""]


@dataclass
class Result:
    mode: str
    accepted: int = 0
    refused_at_enqueue: int = 0
    jobs_lost: int = 0
    stuck: int = 0
    stored: int = 0
    failed: int = 0
    paid_tasks: int = 0
    paid_without_images: int = 0
    extra_creates: int = 0
    rescued: int = 0
    lost_reported: int = 0
    resets_detected: int = 0
    recover_s: float = 0.0
    enqueue_p50_ms: float = 0.0
    notes: str = ""


class Mode:
    """Starts the mode's Redis servers, kills the one that matters, brings it back."""

    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.base = base
        self.replica: Redis | None = None
        self.extra_env: dict[str, str] = {}
        if name in ("separate", "separate-volatile"):
            self.broker = Redis(base / "broker", AOF_EVERYSEC)
            store_opts = AOF_EVERYSEC if name == "separate" else VOLATILE
            self.store = Redis(base / "store", store_opts)
        else:
            opts = {
                "volatile": VOLATILE,
                "aof-everysec": AOF_EVERYSEC,
                "aof-always": AOF_ALWAYS,
                "replica-wait": VOLATILE,
            }[name]
            self.broker = self.store = Redis(base / "redis", opts)
        if name == "replica-wait":
            self.replica = Redis(base / "replica", VOLATILE)
            self.extra_env["NBQ_STORE_WAIT_REPLICAS"] = "1"
            self.extra_env["NBQ_STORE_WAIT_TIMEOUT_MS"] = "200"
        if name in ("volatile", "replica-wait", "separate-volatile"):
            self.extra_env["NBQ_ALLOW_VOLATILE_STORE"] = "true"

    def start(self) -> None:
        self.broker.start()
        if self.store is not self.broker:
            self.store.start()
        if self.replica is not None:
            self.replica.start(["--replicaof", "127.0.0.1", str(self.store.port)])
            wait_until(
                lambda: (
                    self.replica is not None
                    and self.replica.client().info("replication").get("master_link_status") == "up"
                ),
                timeout_s=30,
                what="replica link",
            )

    def env(self) -> dict[str, str]:
        env = {"NBQ_BROKER_URL": self.broker.url, **self.extra_env}
        if self.store is not self.broker:
            env["NBQ_REDIS_URL"] = self.store.url
        return env

    def kill(self) -> None:
        self.store.kill()

    def restart(self) -> None:
        if self.replica is None:
            self.store.start()
            return
        # Failover: the replica's data becomes the primary's, at the primary's address.
        replica = self.replica
        replica.client().execute_command("REPLICAOF", "NO", "ONE")
        replica.client().save()
        shutil.copy(replica.dir / "dump.rdb", self.store.dir / "dump.rdb")
        self.store.start()
        replica.client().execute_command("REPLICAOF", "127.0.0.1", str(self.store.port))

    def stop(self) -> None:
        for server in (self.replica, self.store, self.broker):
            if server is not None:
                server.stop()


def run_mode(name: str, args: argparse.Namespace) -> Result:
    base = Path(tempfile.mkdtemp(prefix=f"nbq-durability-{name}-"))
    mode = Mode(name, base)
    s3 = S3Proc(base)
    emulator = EmulatorProc(base, TIME_SCALE)
    worker: subprocess.Popen[bytes] | None = None
    result = Result(mode=name)
    try:
        mode.start()
        s3.start()
        emulator.start()
        env = {
            "NBQ_EVOLINK_API_KEY": "bench",
            "NBQ_EVOLINK_BASE_URL": emulator.url,
            "NBQ_RESULT_URL_ALLOWED_HOSTS": "127.0.0.1",
            "NBQ_RESULT_URL_ALLOW_HTTP": "true",
            "NBQ_LOG_LEVEL": "INFO",
            "NBQ_POLL_MIN_INTERVAL_S": "0.1",
            "NBQ_POLL_MAX_INTERVAL_S": "0.5",
            "NBQ_DEFAULT_ESTIMATED_TIME_S": "0.6",
            "NBQ_RETRY_BACKOFF_BASE_S": "0.1",
            "NBQ_RETRY_BACKOFF_MAX_S": "1",
            "NBQ_STUCK_AFTER_S": "3",
            "NBQ_RECONCILE_INTERVAL_S": "1",
            "NBQ_DOWNLOAD_TIMEOUT_S": "10",
            "NBQ_STORE_EPOCH_CHECK_S": "1",
            "NBQ_VISIBILITY_TIMEOUT_S": "600",
            **s3.env(),
            **mode.env(),
        }
        use_env(env)
        cmd = [
            sys.executable,
            "-m",
            "nanobanana_queue.producers.cli.main",
            "worker",
            "--queues",
            "submit,poll,download",
            "--pool",
            "threads",
            "--concurrency",
            "8",
            "--hostname",
            "w@durability",
            "--loglevel",
            "INFO",
        ]
        worker = start_proc(cmd, log=base / "worker.log", env=env)
        wait_worker(mode.broker.url, "w@durability", worker)
        _load_and_kill(mode, args, result)
        _settle(mode, emulator, args, result)
        logs = (base / "worker.log").read_text(errors="replace")
        if "store_reset_detected" in logs and not result.resets_detected:
            result.notes = "reset logged at ERROR"
        if worker.poll() is not None:
            result.notes += f" worker exited {worker.returncode}"
    finally:
        if worker is not None:
            stop_proc(worker)
        emulator.stop()
        s3.stop()
        mode.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return result


def _load_and_kill(mode: Mode, args: argparse.Namespace, result: Result) -> None:
    from nanobanana_queue.producers.api import Producer
    from nanobanana_queue.workers.settings import get_settings

    producer = Producer(get_settings())
    accepted: list[str] = []
    latencies: list[float] = []
    refused = 0

    def kill_later() -> None:
        time.sleep(args.kill_at)
        mode.kill()
        time.sleep(args.down)
        mode.restart()
        _times["restart"] = time.monotonic()

    killer = threading.Thread(target=kill_later, daemon=True)
    start = time.monotonic()
    killer.start()
    request = {"prompt": "durability: a banana", "size": "1:1", "quality": "1K"}
    for i in range(args.jobs):
        due = start + i / args.rate
        if (pause := due - time.monotonic()) > 0:
            time.sleep(pause)
        t0 = time.monotonic()
        try:
            accepted.append(producer.enqueue(request).job_id)
            latencies.append(time.monotonic() - t0)
        except Exception as exc:  # the caller was told: refused, not lost
            refused += 1
            _errors[type(exc).__name__] = _errors.get(type(exc).__name__, 0) + 1
    killer.join()
    result.accepted = len(accepted)
    result.refused_at_enqueue = refused
    latencies.sort()
    result.enqueue_p50_ms = round(1000 * latencies[len(latencies) // 2], 2) if latencies else 0.0
    _accepted[:] = accepted
    if _errors:
        result.notes = f"enqueue errors: {dict(_errors)}"
        _errors.clear()


_accepted: list[str] = []
_times: dict[str, float] = {}
_errors: dict[str, int] = {}


def _settle(mode: Mode, emulator: EmulatorProc, args: argparse.Namespace, result: Result) -> None:
    from nanobanana_queue.producers.api import Producer
    from nanobanana_queue.workers.settings import get_settings
    from nanobanana_queue.workers.storage.s3 import ObjectStore

    producer = Producer(get_settings())
    restart_at = _times.get("restart", time.monotonic())
    pending = set(_accepted)
    ended_at = restart_at
    deadline = time.monotonic() + args.settle
    final: dict[str, Any] = {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            try:
                record = producer.lookup(job_id)
            except Exception:  # store still loading
                continue
            if record is not None and record.is_terminal:
                final[job_id] = record
                pending.discard(job_id)
                ended_at = time.monotonic()
        time.sleep(0.5)
    for job_id in pending:
        final[job_id] = producer.lookup(job_id)
    result.recover_s = round(ended_at - restart_at, 1)
    result.stored = sum(1 for r in final.values() if r is not None and r.state.value == "stored")
    result.failed = sum(1 for r in final.values() if r is not None and r.state.value == "failed")
    result.stuck = sum(1 for r in final.values() if r is not None and not r.is_terminal)
    result.jobs_lost = sum(1 for r in final.values() if r is None) + result.stuck

    objects = ObjectStore.from_settings(get_settings())
    stored_tasks = set()
    for key in objects.list_keys("images/"):
        if key.endswith("/manifest.json"):
            manifest = objects.get_json(key) or {}
            stored_tasks.add(manifest.get("evolink_task_id"))
    tasks = emulator.control("GET", "tasks")
    completed = [t["id"] for t in tasks if t["status"] == "completed"]
    result.paid_tasks = len(completed)
    result.paid_without_images = sum(1 for t in completed if t not in stored_tasks)
    by_key: dict[str, int] = emulator.stats()["creates_by_idempotency_key"]
    per_job: dict[str, int] = {}
    for key, n in by_key.items():
        job = key.removeprefix("nbq-").rsplit("-", 1)[0]
        per_job[job] = per_job.get(job, 0) + n
    result.extra_creates = sum(max(0, n - 1) for n in per_job.values())

    client = mode.store.client()
    result.rescued = _hsum(client, "nbq:metrics:c:jobs_rescued")
    result.lost_reported = _hsum(client, "nbq:metrics:c:jobs_lost")
    result.resets_detected = _hsum(client, "nbq:metrics:c:store_resets")


def _hsum(client: Any, key: str) -> int:
    return int(sum(float(v) for v in client.hgetall(key).values()))


def _in_child(name: str, args: argparse.Namespace) -> Result:
    """Each mode in a fresh interpreter: no client, setting or metric writer carries over."""
    passed = [f"--jobs={args.jobs}", f"--rate={args.rate}", f"--kill-at={args.kill_at}"]
    passed += [f"--down={args.down}", f"--settle={args.settle}"]
    passed += ["--keep"] if args.keep else []
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.durability", *passed, "--one", name],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return Result(**json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"mode {name} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def table(results: list[Result]) -> str:
    head = (
        "| mode | accepted | refused at enqueue | jobs lost | paid tasks | paid without images "
        "| extra creates | rescued | reported lost | resets detected | recover (s) "
        "| enqueue p50 (ms) |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in results:
        rows.append(
            f"| {r.mode} | {r.accepted} | {r.refused_at_enqueue} | {r.jobs_lost} | {r.paid_tasks} "
            f"| {r.paid_without_images} | {r.extra_creates} | {r.rescued} | {r.lost_reported} "
            f"| {r.resets_detected} | {r.recover_s} | {r.enqueue_p50_ms} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--rate", type=float, default=30.0, help="enqueues per second")
    parser.add_argument("--kill-at", type=float, default=2.5, help="seconds into the load")
    parser.add_argument("--down", type=float, default=1.0, help="seconds Redis stays down")
    parser.add_argument("--settle", type=float, default=40.0, help="seconds to wait for ends")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one mode, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(asdict(run_mode(args.one, args))), flush=True)
        return 0
    results = []
    for name in args.modes.split(","):
        started = time.monotonic()
        result = _in_child(name.strip(), args)
        results.append(result)
        print(f"{name}: {json.dumps(asdict(result))} ({time.monotonic() - started:.0f} s)")
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "durability",
                "params": {k: str(v) for k, v in vars(args).items()},
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
