"""The benchmark report: B1's I/O-floor row and the merged JSON (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import runner
from benchmarks.results import BenchResult
from benchmarks.scale import SCALES


def _b1(pipeline: float, noop: float, floor: float, *, all_stored: bool = True) -> BenchResult:
    return BenchResult(
        id="B1",
        title="pipeline throughput vs 3 no-op tasks",
        value=pipeline,
        unit="jobs/s",
        target=">= 0.6x baseline",
        passed=pipeline / noop >= 0.6,
        ratio=round(pipeline / noop, 3),
        raw={
            "io_floor_ratio_vs_baseline": round(floor / noop, 3),
            "pipeline_ratio_vs_io_floor": round(pipeline / floor, 3),
            "io_floor_jobs_per_s": floor,
            "io_floor_worker_cpu_ms_per_job": 12.0,
            "worker_cpu_ms_per_job": 16.0,
            "all_stored": all_stored,
        },
    )


def test_the_io_floor_row_compares_the_pipeline_with_the_same_io_done_bare() -> None:
    row = runner.versus_io_floor(_b1(pipeline=63.0, noop=130.0, floor=70.0))
    assert row.id == "B1io" and row.ratio == pytest.approx(0.9)
    assert row.passed is True  # the target: >= 0.85x the floor
    assert "0.538x the no-op chain" in row.title  # the ceiling is stated in the row itself
    assert "pipeline 16, floor 12" in row.notes  # worker CPU-ms per job beside the ratio


def test_the_io_floor_row_fails_below_target_or_when_a_job_was_not_stored() -> None:
    assert runner.versus_io_floor(_b1(pipeline=50.0, noop=130.0, floor=70.0)).passed is False
    lost = _b1(pipeline=65.0, noop=130.0, floor=70.0, all_stored=False)
    assert runner.versus_io_floor(lost).passed is False


def test_a_partial_run_keeps_the_other_rows_of_the_last_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "RESULTS_DIR", tmp_path)
    old = BenchResult("B4", "download memory", 18.0, "MB", "<= 20 MB", True)
    runner.write_json([old], SCALES["small"], False, "python -m benchmarks --only B4")
    b1 = _b1(pipeline=50.0, noop=130.0, floor=70.0)
    path = runner.write_json(
        [b1, runner.versus_io_floor(b1)], SCALES["small"], False, "python -m benchmarks --only B1"
    )
    report = json.loads(path.read_text())
    assert list(report["results"]) == ["B1", "B1io", "B4"]
    assert report["results"]["B4"]["command"] == "python -m benchmarks --only B4"
