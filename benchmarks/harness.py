"""Process helpers for benchmarks: free ports, redis-server, moto S3, the emulator, workers.

``nbq bench`` (B1–B6) must not import ``tests``: it runs from an install. The Redis
HA/cluster experiments run from a checkout (``python -m benchmarks.capacity_run
--cluster``, ``cluster_wait``, ``redis_commands --cluster``, ``sentinel_failover``) and
borrow the tests' cluster and Sentinel servers (``tests/support``). Processes run under
the one supervisor (``devstack/procs.py``, shared with the tests and ``nbq dev``), plus
process-tree sampling (RSS, CPU) with psutil. Everything binds 127.0.0.1 on free ports
and is stopped by its owner (never by name).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from nanobanana_queue.devstack.procs import free_port, port_open, start, stop, wait_until
from nanobanana_queue.devstack.redis_service import redis_server_binary

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench"
S3_ACCESS_KEY = "bench-access-key"
S3_SECRET_KEY = "bench-secret-key-not-real"
S3_BUCKET = "nbq-bench"
#: The module run as ``python -m <module> worker``; the runner's ``--patched`` swaps it.
WORKER_MODULE = ["nanobanana_queue.producers.cli.main"]
#: A small, fast request (1K: 20 s nominal estimate in the emulator).
REQUEST: dict[str, Any] = {"prompt": "benchmark: a banana", "size": "1:1", "quality": "1K"}


def start_proc(
    args: list[str], *, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The supervisor's ``start`` from the repository root (its own session, so stopping
    reaches the process's children)."""
    return start(args, env=env, log=log, cwd=ROOT)


def stop_proc(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """The supervisor's ``stop``, with longer patience: a loaded worker drains slowly."""
    stop(proc, timeout_s=timeout_s)


@dataclass
class RedisProc:
    """A benchmark-owned redis-server with AOF on (as in production)."""

    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.dir), "--appendonly", "yes", "--save", ""]
        self.proc = start_proc([*args, "--protected-mode", "no"], log=self.dir / "redis.log")
        wait_until(lambda: port_open(self.port) and bool(self.client().ping()), what="redis")

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def info(self) -> dict[str, Any]:
        return dict(self.client().info())

    def stop(self) -> None:
        if self.proc is not None:
            stop_proc(self.proc)
            self.proc = None


@dataclass
class S3Proc:
    """moto's S3 server (state in its memory only)."""

    dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = start_proc(
            args, log=self.dir / "moto.log", env={"AWS_DEFAULT_REGION": "us-east-1"}
        )
        wait_until(lambda: port_open(self.port), what="moto S3")
        from minio import Minio

        client = Minio(
            f"127.0.0.1:{self.port}",
            access_key=S3_ACCESS_KEY,
            secret_key=S3_SECRET_KEY,
            secure=False,
            region="us-east-1",
        )
        if not client.bucket_exists(S3_BUCKET):
            client.make_bucket(S3_BUCKET)

    def env(self) -> dict[str, str]:
        return {
            "NBQ_S3_ENDPOINT": f"127.0.0.1:{self.port}",
            "NBQ_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "NBQ_S3_SECRET_KEY": S3_SECRET_KEY,
            "NBQ_S3_BUCKET": S3_BUCKET,
            "NBQ_S3_SECURE": "false",
            "NBQ_S3_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.proc is not None:
            stop_proc(self.proc)
            self.proc = None


@dataclass
class EmulatorProc:
    """``python -m emulator`` on a free port with its control API."""

    dir: Path
    time_scale: float
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "nanobanana_queue.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        args += ["--time-scale", str(self.time_scale), "--max-pixels", "4096"]
        # Links live one real hour: a scaled 24 h TTL (86 s at 0.001) expires in backlogs.
        args += ["--result-ttl", f"{3600 / self.time_scale:g}"]
        args += ["--api-key", API_KEY, "--seed", "7", *self.extra]
        self.proc = start_proc(args, log=self.dir / "emulator.log")
        wait_until(lambda: self.control("GET", "health") == {"ok": True}, what="emulator")

    def control(self, method: str, path: str, body: Any = None) -> Any:
        with httpx.Client(timeout=30, trust_env=False) as client:
            response = client.request(method, f"{self.url}/_emulator/{path}", json=body)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return dict(self.control("GET", "stats"))

    def stop(self) -> None:
        if self.proc is not None:
            stop_proc(self.proc)
            self.proc = None


def wait_off_on_rates(
    calls: Mapping[int, Callable[[], object]], n: int, rounds: int, *, warm_up: int = 50
) -> dict[str, Any]:
    """Calls per second of each ``WAIT`` setting (``calls[0]`` off, ``calls[1]`` on),
    rounds alternating so the machine's noise hits both alike; medians and their ratio."""
    for call in calls.values():
        for _ in range(warm_up):  # connections to every node, scripts cached
            call()
    rates: dict[int, list[float]] = {w: [] for w in calls}
    for _ in range(rounds):
        for wait, call in calls.items():
            started = time.perf_counter()
            for _ in range(n):
                call()
            rates[wait].append(n / (time.perf_counter() - started))
    off, on = statistics.median(rates[0]), statistics.median(rates[1])
    return {
        "per_round": n,
        "rounds": rounds,
        "wait_off_per_s": round(off, 1),
        "wait_on_per_s": round(on, 1),
        "ratio_on_off": round(on / off, 3),
        "wait_off_rounds": [round(r, 1) for r in rates[0]],
        "wait_on_rounds": [round(r, 1) for r in rates[1]],
    }


def time_scaled_settings(scale: float) -> dict[str, str]:
    """Pipeline timings matched to the emulator's time scale (production values × scale)."""

    def s(seconds: float, floor: float = 0.005) -> str:
        return f"{max(seconds * scale, floor):g}"

    return {
        "NBQ_POLL_MIN_INTERVAL_S": s(2.0),
        "NBQ_POLL_MAX_INTERVAL_S": s(15.0),
        "NBQ_DEFAULT_ESTIMATED_TIME_S": s(30.0),
        "NBQ_RETRY_BACKOFF_BASE_S": s(1.0),
        "NBQ_RETRY_BACKOFF_MAX_S": s(60.0),
        "NBQ_BREAKER_PROBE_INTERVAL_S": s(60.0, 0.5),
        "NBQ_POLL_DEADLINE_S": s(600.0, 60.0),
        "NBQ_HTTP_READ_TIMEOUT_S": "10",
        "NBQ_DOWNLOAD_TIMEOUT_S": "60",
    }


@dataclass
class BenchStack:
    """Redis + moto S3 + emulator, and the worker processes started on them."""

    dir: Path
    time_scale: float
    emulator_args: list[str] = field(default_factory=list)
    overrides: dict[str, str] = field(default_factory=dict)
    #: Another broker (``amqp://`` vhost); the job store stays on this stack's Redis.
    broker_url: str | None = None
    redis: RedisProc = field(init=False)
    s3: S3Proc = field(init=False)
    emulator: EmulatorProc = field(init=False)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisProc(self.dir)
        self.s3 = S3Proc(self.dir)
        self.emulator = EmulatorProc(self.dir, self.time_scale, self.emulator_args)

    def start(self) -> None:
        self.redis.start()
        self.s3.start()
        self.emulator.start()
        use_env(self.env())

    def stop(self) -> None:
        for proc in self.workers:
            stop_proc(proc)
        self.workers.clear()
        self.emulator.stop()
        self.s3.stop()
        self.redis.stop()

    def env(self) -> dict[str, str]:
        return {
            "NBQ_EVOLINK_API_KEY": API_KEY,
            "NBQ_EVOLINK_BASE_URL": self.emulator.url,
            "NBQ_BROKER_URL": self.broker_url or self.redis.url,
            "NBQ_REDIS_URL": self.redis.url,
            "NBQ_RESULT_URL_PRIVATE_HOSTS": "127.0.0.1",
            "NBQ_RESULT_URL_ALLOW_HTTP": "true",
            "NBQ_LOG_LEVEL": "INFO",
            "NBQ_STUCK_AFTER_S": "600",
            "NBQ_RECONCILE_INTERVAL_S": "30",
            "NBQ_VISIBILITY_TIMEOUT_S": "3600",
            **self.s3.env(),
            **time_scaled_settings(self.time_scale),
            **self.overrides,
        }

    def start_worker(
        self,
        *,
        queues: str,
        pool: str = "threads",
        concurrency: int = 8,
        name: str = "w",
        module: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """A real ``nbq worker``; ``module`` may name a wrapper (benchmarks.patched_worker)."""
        args = [sys.executable, "-m", module or WORKER_MODULE[0], "worker", "--queues", queues]
        args += ["--pool", pool, "--concurrency", str(concurrency)]
        args += ["--hostname", f"{name}@bench", "--loglevel", "INFO"]
        proc = start_proc(args, log=self.dir / f"worker-{name}.log", env=self.env())
        self.workers.append(proc)
        wait_worker(self.broker_url or self.redis.url, f"{name}@bench", proc)
        return proc

    def producer(self) -> Any:
        from nanobanana_queue.producers.api import Producer
        from nanobanana_queue.workers.settings import get_settings

        return Producer(get_settings())

    def worker_log(self, name: str) -> str:
        path = self.dir / f"worker-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def use_env(env: dict[str, str]) -> None:
    """Point this process's settings (and metrics hook) at the benchmark's own services."""
    os.environ.update(env)
    from nanobanana_queue.workers.settings import get_settings

    get_settings.cache_clear()
    from nanobanana_queue.workers.runtime import reset_runtime

    reset_runtime()


def wait_worker(broker_url: str, hostname: str, proc: subprocess.Popen[bytes]) -> None:
    from celery import Celery

    probe = Celery("probe", broker=broker_url)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"worker {hostname} exited with {proc.returncode}")
        return any(hostname in reply for reply in probe.control.ping(timeout=0.5))

    try:
        wait_until(ready, timeout_s=90, interval_s=0.3, what=f"worker {hostname}")
    finally:
        probe.close()


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def tree_cpu_s(pid: int) -> float:
    total = 0.0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


class PeakSampler:
    """Samples a process tree's RSS every ``interval_s`` in a thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.003) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        procs = tree(self.pid)
        while not self._stop.is_set():
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    self.peak = max(self.peak, proc.memory_info().rss)
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def bench_stack(
    dir: Path,
    time_scale: float,
    *,
    emulator_args: list[str] | None = None,
    overrides: dict[str, str] | None = None,
    broker_url: str | None = None,
) -> Iterator[BenchStack]:
    stack = BenchStack(
        dir, time_scale, list(emulator_args or []), dict(overrides or {}), broker_url
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
