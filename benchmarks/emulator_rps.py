"""Requests per second of EvolinkClient against a local emulator, at concurrency 1 and 16.

Run: ``python -m benchmarks.emulator_rps`` (``--help`` for options). It starts its own
emulator on a free loopback port, warms up, then sends a fixed number of calls per level
(create and query alternating: each worker creates a task and immediately queries it),
prints a table and writes ``benchmarks/results/emulator.json``.

A benchmark, not a test: numbers depend on the machine (both the client and the emulator
share its cores), so nothing here asserts a speed; the report states the target.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.errors import EvolinkError
from nanobanana_queue.workers.evolink.client import EvolinkClient
from nanobanana_queue.workers.evolink.models import GenerationRequest, Quality, Size

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = ROOT / "benchmarks" / "results" / "emulator.json"
API_KEY = "bench"
#: The goal stated in the issue for concurrency 16 (requests per second).
TARGET_RPS_AT_16 = 2000.0
REQUEST = GenerationRequest(prompt="benchmark: a banana", size=Size.R1_1, quality=Quality.Q1K)


@dataclass
class LevelResult:
    """One concurrency level: calls made, failures, throughput and latency."""

    concurrency: int
    #: "shared": every thread uses one pooled client; "per-thread": one client each.
    clients: str
    requests: int
    errors: int
    elapsed_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    #: CPU time of this whole process (all client threads) per call: the client's cost.
    client_cpu_ms_per_request: float
    error_kinds: dict[str, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def emulator(port: int, *, startup_timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``python -m emulator`` on ``port`` for the duration of the block; yields its URL."""
    args = [
        sys.executable,
        "-m",
        "nanobanana_queue.emulator",
        "--port",
        str(port),
        "--time-scale",
        "0.001",
        "--max-pixels",
        "4096",
        "--api-key",
        API_KEY,
    ]
    log_path = Path(tempfile.gettempdir()) / f"nbq-bench-emulator-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base_url, startup_timeout_s, log_path)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_ready(
    proc: subprocess.Popen[bytes], base_url: str, timeout_s: float, log_path: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(base_url + "/_emulator/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"emulator not answering after {timeout_s}s; see {log_path}")


def run_level(
    clients: list[EvolinkClient], concurrency: int, requests: int, max_duration_s: float
) -> LevelResult:
    """``requests`` calls from ``concurrency`` threads; thread ``i`` uses ``clients[i % n]``."""
    pairs = itertools.count()
    n_pairs = max(1, requests // 2)
    latencies_s: list[list[float]] = [[] for _ in range(concurrency)]
    errors: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + max_duration_s

    def worker(slot: int) -> None:
        mine = latencies_s[slot]
        client = clients[slot % len(clients)]
        while next(pairs) < n_pairs and time.perf_counter() < deadline:
            for call in ("create", "query"):
                started = time.perf_counter()
                try:
                    if call == "create":
                        task_id = client.create_task(REQUEST).id
                    else:
                        client.get_task(task_id)
                except EvolinkError as exc:
                    with lock:
                        errors[exc.reason] = errors.get(exc.reason, 0) + 1
                    if call == "create":
                        break
                mine.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    cpu_started_s = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started_s
    done = sorted(itertools.chain.from_iterable(latencies_s))
    n_errors = sum(errors.values())
    total = len(done) + n_errors
    return LevelResult(
        concurrency=concurrency,
        clients="shared" if len(clients) == 1 else "per-thread",
        requests=total,
        errors=n_errors,
        elapsed_s=round(elapsed_s, 3),
        rps=round(len(done) / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        p50_ms=round(statistics.median(done) * 1000, 2) if done else 0.0,
        p99_ms=round(done[min(len(done) - 1, int(len(done) * 0.99))] * 1000, 2) if done else 0.0,
        client_cpu_ms_per_request=round(cpu_s / total * 1000, 3) if total else 0.0,
        error_kinds=errors,
    )


def median_run(runs: list[LevelResult]) -> LevelResult:
    """The run with the median rate (the machine is shared: single runs are noisy)."""
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def print_table(results: list[LevelResult]) -> None:
    print(
        f"{'concurrency':>11} {'clients':>10} {'requests':>9} {'errors':>7} {'seconds':>8} "
        f"{'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/req':>10}"
    )
    for r in results:
        print(
            f"{r.concurrency:>11} {r.clients:>10} {r.requests:>9} {r.errors:>7} "
            f"{r.elapsed_s:>8.2f} {r.rps:>9.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.client_cpu_ms_per_request:>10.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="calls per level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--max-duration-s",
        type=float,
        default=60.0,
        help="stop a level after this long even if calls remain",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per level; the median run is reported"
    )
    parser.add_argument("--warmup", type=int, default=100, help="calls before measuring")
    parser.add_argument("--base-url", help="use a running emulator (key 'bench')")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    parser.add_argument(
        "--with-metrics",
        action="store_true",
        help="keep the real metrics hook (one Redis write per call to NBQ_REDIS_URL; "
        "point it at a Redis of your own first)",
    )
    args = parser.parse_args(argv)
    if not args.with_metrics:
        # Measure the client and the API, not the metrics store (which defaults to the
        # shared Redis on 6379: a benchmark must not write there).
        metrics.set_enabled(False)

    with _target(args.base_url) as base_url:
        results = measure(
            base_url, args.levels, args.requests, args.repeat, args.warmup, args.max_duration_s
        )

    print_table(results)
    report: dict[str, object] = {
        f"concurrency_{r.concurrency}_rps"
        + ("" if r.clients == "shared" else "_client_per_thread"): r.rps
        for r in results
    }
    report.update(
        {
            "target_rps_at_16": TARGET_RPS_AT_16,
            "levels": [asdict(r) for r in results],
            "requests_per_level": args.requests,
            "runs_per_level": max(1, args.repeat),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "call_mix": "create then query of the same task, alternating",
            "emulator": "python -m nanobanana_queue.emulator --time-scale 0.001 --max-pixels 4096",
            "metrics": "real hook (Redis)" if args.with_metrics else "disabled",
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def measure(
    base_url: str,
    levels: list[int],
    requests: int,
    repeat: int,
    warmup: int,
    max_duration_s: float,
) -> list[LevelResult]:
    """Each level with one shared client; levels above 1 also with a client per thread."""
    n_clients = max(levels)
    pool = [EvolinkClient(base_url, API_KEY) for _ in range(n_clients)]
    try:
        run_level(pool, n_clients, warmup, max_duration_s)  # open every connection once
        results: list[LevelResult] = []
        for level in levels:
            layouts = [pool[:1]] + ([pool[:level]] if level > 1 else [])
            for clients in layouts:
                runs = [
                    run_level(clients, level, requests, max_duration_s)
                    for _ in range(max(1, repeat))
                ]
                results.append(median_run(runs))
        return results
    finally:
        for client in pool:
            client.close()


@contextmanager
def _target(base_url: str | None) -> Iterator[str]:
    if base_url:
        yield base_url.rstrip("/")
        return
    with emulator(free_port()) as url:
        yield url


if __name__ == "__main__":
    raise SystemExit(main())
