"""B6: emulator requests/s (benchmarks.emulator_rps) versus the API rate B1 needed."""

from __future__ import annotations

from benchmarks import emulator_rps
from benchmarks.results import BenchResult
from nanobanana_queue.workers import metrics

TARGET_RATIO = 3.0


def run(pipeline_api_rps: float | None) -> BenchResult:
    metrics.set_enabled(False)  # measure the API, never write to a Redis
    with emulator_rps.emulator(emulator_rps.free_port()) as url:
        levels = emulator_rps.measure(
            url, [16], requests=2000, repeat=3, warmup=100, max_duration_s=30
        )
    best = max(levels, key=lambda r: r.rps)
    ratio = best.rps / pipeline_api_rps if pipeline_api_rps else None
    return BenchResult(
        id="B6",
        title="emulator headroom vs B1's API rate",
        value=best.rps,
        unit="emulator req/s (c=16)",
        ratio=round(ratio, 2) if ratio is not None else None,
        target=f">= {TARGET_RATIO:g}x B1's API calls/s",
        passed=None if ratio is None else ratio >= TARGET_RATIO,
        inputs={"concurrency": 16, "requests": 2000, "repeat": 3, "call_mix": "create+query"},
        raw={
            "levels": [
                {"clients": r.clients, "rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}
                for r in levels
            ],
            "b1_api_calls_per_s": pipeline_api_rps,
        },
        notes="" if ratio is not None else "B1 not run: no pipeline rate to compare",
    )
