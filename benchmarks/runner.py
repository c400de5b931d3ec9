"""Run B1–B6 side by side, print one table and write ``benchmarks/results/latest.json``.

    python -m benchmarks [--only B1,B2] [--scale small|full] [--patched]
    nbq bench [--only B1,B2] [--scale small|full]

Each benchmark starts its own redis-server, moto S3 server, emulator and worker
processes on free loopback ports and stops them when done; one failing benchmark is
reported as failed and the others still run. Not tests: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.results import BenchResult, failed
from benchmarks.scale import SCALES, Scale

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALL = ("B1", "B2", "B3", "B4", "B5", "B6")
#: Rows in report order; B1io is derived from B1's run (not selectable on its own).
REPORTED = ("B1", "B1io", "B2", "B3", "B4", "B5", "B6")
#: Our own B1 target: the pipeline against the same I/O with no bookkeeping (see B1io).
IO_FLOOR_TARGET = 0.85
TARGETS = {
    "B1": ">= 0.6x baseline",
    "B2": "median <= 3 polls, lag p95 <= 3 s",
    "B3": "worker RSS <= 1.5 GB, 0 duplicates, all complete",
    "B4": "<= 20 MB",
    "B5": ">= 0.8x send_task",
    "B6": ">= 3x B1's API calls/s",
}


def run_all(
    only: list[str], scale: Scale, *, patched: bool = False, workdir: Path | None = None
) -> list[BenchResult]:
    if patched:
        harness.WORKER_MODULE[0] = "benchmarks.patched_worker"
    workdir = workdir or Path(tempfile.mkdtemp(prefix="nbq-bench-"))
    results: dict[str, BenchResult] = {}
    c = scale.workers_concurrency

    def b6() -> BenchResult:
        from benchmarks import b6_headroom

        b1 = results.get("B1")
        if b1 is not None and b1.error is None:
            return b6_headroom.run(b1.raw.get("api_calls_per_s"))
        earlier = previous_results(patched).get("B1", {})
        return b6_headroom.run(earlier.get("raw", {}).get("api_calls_per_s"))

    steps: dict[str, Callable[[], BenchResult]] = {
        "B1": lambda: _import("b1_throughput").run(workdir, scale.b1_jobs, c),
        "B2": lambda: _import("b2_polling").run(workdir, scale.b2_jobs, c),
        "B3": lambda: _import("b3_inflight").run(workdir, scale.b3_jobs, c),
        "B4": lambda: _import("b4_download_memory").run(workdir),
        "B5": lambda: _import("b5_enqueue").run(workdir, scale.b5_requests),
        "B6": b6,
    }
    for bench_id in ALL:
        if bench_id not in only:
            continue
        started = time.perf_counter()
        print(f"[{bench_id}] running ...", flush=True)
        try:
            result = steps[bench_id]()
        except Exception as exc:
            traceback.print_exc()
            result = failed(bench_id, bench_id, TARGETS[bench_id], f"{type(exc).__name__}: {exc}")
        result.raw["wall_s"] = round(time.perf_counter() - started, 1)
        results[bench_id] = result
        print(f"[{bench_id}] done in {result.raw['wall_s']} s", flush=True)
        if bench_id == "B1" and result.error is None:
            results["B1io"] = versus_io_floor(result)
    return list(results.values())


def versus_io_floor(b1: BenchResult) -> BenchResult:
    """B1 measured against the I/O floor: what our own bookkeeping costs.

    The floor makes only the job's API calls (the create, the queries on the pipeline's
    own countdowns, the downloads of its own results) and S3 writes through Celery tasks;
    its ratio to the no-op chain bounds what any pipeline can reach here. Worker CPU per
    job of both sides is stated beside the ratio: on a loaded machine throughput can hide
    a cost that CPU shows.
    """
    raw = b1.raw
    ratio = float(raw["pipeline_ratio_vs_io_floor"])
    vs_noop = raw.get("io_floor_ratio_vs_baseline")
    return BenchResult(
        id="B1io",
        title=(
            "pipeline vs the same API calls + S3 writes with no bookkeeping "
            + (f"(that floor is itself {vs_noop:g}x the no-op chain)" if vs_noop else "")
        ).strip(),
        notes=(
            f"worker CPU-ms/job: pipeline {raw['worker_cpu_ms_per_job']:g}, "
            f"floor {raw['io_floor_worker_cpu_ms_per_job']:g}"
        ),
        value=b1.value,
        unit="jobs/s",
        target=f">= {IO_FLOOR_TARGET}x I/O floor",
        passed=ratio >= IO_FLOOR_TARGET and bool(b1.raw.get("all_stored", True)),
        ratio=ratio,
        inputs=b1.inputs,
        raw={
            "io_floor_jobs_per_s": raw["io_floor_jobs_per_s"],
            "io_floor_worker_cpu_ms_per_job": raw["io_floor_worker_cpu_ms_per_job"],
            "pipeline_worker_cpu_ms_per_job": raw["worker_cpu_ms_per_job"],
            "pipeline_redis_commands_per_job": raw.get("redis_commands_per_job"),
        },
    )


def _import(name: str) -> Any:
    import importlib

    return importlib.import_module(f"benchmarks.{name}")


def print_table(results: list[BenchResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="nanobanana-queue benchmarks")
    for column in ("id", "what", "value", "ratio", "target", "result"):
        table.add_column(column)
    for r in results:
        verdict = {True: "[green]pass", False: "[red]FAIL", None: "n/a"}[r.passed]
        value = f"{r.value:g} {r.unit}" if r.error is None else f"error: {r.error}"
        ratio = f"{r.ratio:g}x" if r.ratio is not None else (r.notes or "")
        table.add_row(r.id, r.title, value, ratio, r.target, verdict)
    Console().print(table)


def results_path(patched: bool) -> Path:
    return RESULTS_DIR / ("latest-patched.json" if patched else "latest.json")


def previous_results(patched: bool) -> dict[str, Any]:
    """Results of the last run, so ``--only`` updates some rows and keeps the others."""
    path = results_path(patched)
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("results", {}))
    except (OSError, ValueError):
        return {}


def write_json(results: list[BenchResult], scale: Scale, patched: bool, command: str) -> Path:
    """Merge into the last report: rows not run now keep their earlier numbers."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = results_path(patched)
    merged = previous_results(patched)
    for r in results:
        merged[r.id] = {**r.to_json(), "command": command, "scale": scale.name}
    report = {
        "command": command,
        "scale": scale.name,
        "patched_workers": patched,
        "commit": _commit(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "results": {k: merged[k] for k in REPORTED if k in merged},
    }
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=harness.ROOT,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated ids, e.g. B1,B2")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument(
        "--patched",
        action="store_true",
        help="run workers through benchmarks.patched_worker (this suite's proposed fixes)",
    )
    args = parser.parse_args(argv)
    return execute(args.only, args.scale, args.patched)


def execute(only: str, scale_name: str, patched: bool) -> int:
    wanted = [b.strip().upper() for b in only.split(",") if b.strip()]
    unknown = sorted(set(wanted) - set(ALL))
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(ALL)})")
    scale = SCALES[scale_name]
    results = run_all(wanted, scale, patched=patched)
    print_table(results)
    command = f"python -m benchmarks --only {','.join(wanted)} --scale {scale_name}" + (
        " --patched" if patched else ""
    )
    print(f"wrote {write_json(results, scale, patched, command)}")
    return 0
