"""The ``nbq`` CLI end to end, as a user runs it: real processes, real stack."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


def nbq(stack: Stack, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nanobanana_queue.producers.cli.main", *args],
        env={**_base_env(), **stack.env()},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("NBQ_")}


def test_a_batch_file_enqueues_good_lines_reports_bad_ones_and_stores_every_job(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a JSONL file of 10 good requests and 2 bad lines
    lines = [
        json.dumps({"prompt": f"batch {i}", "size": "16:9", "quality": "1K"}) for i in range(10)
    ]
    lines.insert(3, "{not json")
    lines.insert(7, json.dumps({"prompt": "bad size", "size": "7:5"}))
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    results = tmp_path / "results.jsonl"
    stack.start_worker()
    # When it runs with --wait
    done = nbq(stack, "batch", str(batch), "--wait", "--results", str(results))
    # Then bad lines are named by number, every good job is stored, results are JSONL
    assert done.returncode == 1, done.stdout + done.stderr  # 2 lines skipped: exit 1
    assert "2 line(s) skipped" in done.stderr
    assert "line 4" in done.stderr and "line 8" in done.stderr
    assert "size" in done.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 10 and {r["state"] for r in records} == {"stored"}
    assert stack.emulator.stats()["creates_accepted"] == 10
    # And running the same file again pays for nothing twice
    again = nbq(stack, "batch", str(batch), "--json")
    assert "0 new, 10 already enqueued" in again.stderr, again.stderr
    assert {json.loads(line)["state"] for line in again.stdout.splitlines()} == {"stored"}
    assert stack.emulator.stats()["creates_accepted"] == 10


def test_submit_wait_then_status_and_get_download_the_images(stack: Stack, tmp_path: Path) -> None:
    stack.start_worker()
    submitted = nbq(
        stack,
        "submit",
        "a blue square",
        "--size",
        "4:3",
        "--quality",
        "1K",
        "--job-id",
        "cli-job-1",
        "--wait",
        "--json",
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    record = json.loads(submitted.stdout)
    assert record["job_id"] == "cli-job-1" and record["state"] == "stored"

    status = nbq(stack, "status", "cli-job-1", "--json")
    assert json.loads(status.stdout)["objects"] == record["objects"]

    fetched = nbq(stack, "get", "cli-job-1", "-o", str(tmp_path))
    assert fetched.returncode == 0, fetched.stderr
    image_path = next((tmp_path / "cli-job-1").glob("0.*"))
    image = Image.open(io.BytesIO(image_path.read_bytes()))
    assert image.width / image.height == pytest.approx(4 / 3, rel=0.03)
    manifest = json.loads((tmp_path / "cli-job-1" / "manifest.json").read_text())
    assert manifest["job_id"] == "cli-job-1"


def test_bad_input_exits_non_zero_with_the_field_named_and_enqueues_nothing(stack: Stack) -> None:
    bad = nbq(stack, "submit", "x", "--quality", "8K")
    assert bad.returncode != 0
    assert "quality" in bad.stderr
    assert stack.redis.client().keys("nbq:job:*") == []


def test_a_missing_setting_fails_with_one_line_naming_it(stack: Stack) -> None:
    env = {**_base_env(), **stack.env(), "NBQ_POLL_DEADLINE_S": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "status", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "NBQ_POLL_DEADLINE_S" in done.stderr
    assert "Traceback" not in done.stderr
