"""The ``nbq`` CLI as a person uses it: help, errors, warnings, listings, the live wait.

Real processes on the real stack; the live status line is read through a pseudo-terminal
(the only way to see what a person's terminal shows).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.procs import free_port
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

COMMANDS = ("submit", "status", "wait", "get", "cancel", "jobs", "batch", "quota", "worker",
            "flower", "metrics", "reconcile", "dev", "serve", "bench", "emulator")  # fmt: skip


def _env(stack: Stack | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBQ_")}
    return {**env, **(stack.env() if stack else {}), **extra}


def nbq(
    *args: str, env: dict[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "nanobanana_queue.producers.cli.main", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)


def test_nbq_alone_prints_the_help_and_exits_0() -> None:
    done = nbq(env=_env())
    assert done.returncode == 0, done.stderr
    assert "Usage: " in done.stdout and "submit" in done.stdout and "jobs" in done.stdout


def test_no_help_page_shows_a_bool_placeholder() -> None:
    for command in COMMANDS:
        done = nbq(command, "--help", env=_env(COLUMNS="200"))
        assert done.returncode == 0, (command, done.stderr)
        assert "<bool>" not in done.stdout, command


def test_with_json_an_error_is_json_too(stack: Stack) -> None:
    done = nbq("status", "no-such-job", "--json", env=_env(stack))
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "job_not_found" and "no-such-job" in error["message"]


def test_an_unreachable_broker_is_named_without_its_password_and_says_refused() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    done = nbq("status", "x", env=_env(NBQ_BROKER_URL=url))
    assert done.returncode == 3
    assert "connection refused" in done.stderr
    assert f"redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout and "Traceback" not in done.stderr

    as_json = nbq("submit", "a cat", "--json", env=_env(NBQ_BROKER_URL=url))
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "connection_error" and "connection refused" in error["message"]
    assert "hunter2" not in as_json.stdout + as_json.stderr


def test_a_timed_out_connection_is_described_as_timed_out() -> None:
    import redis

    from nanobanana_queue.workers.cli.common import describe_connection_error

    text = describe_connection_error(redis.exceptions.TimeoutError("Timeout connecting"))
    assert text.endswith(": timed out")


def test_an_enqueue_no_worker_consumes_warns_naming_the_broker(stack: Stack) -> None:
    # Given no worker: the submit warns (stderr), the job id still goes to stdout
    done = nbq("submit", "nobody home", "--quality", "1K", env=_env(stack))
    assert done.returncode == 0, done.stderr
    assert "no worker answered for queue 'submit'" in done.stderr
    assert stack.redis.url in done.stderr
    assert re.fullmatch(r"[0-9a-f]{32}\n", done.stdout)
    # When a worker runs, no warning
    stack.start_worker()
    done = nbq("submit", "somebody home", "--quality", "1K", env=_env(stack))
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr


def test_nbq_jobs_lists_by_state_producer_and_limit(stack: Stack) -> None:
    producer = stack.producer()
    for i in range(3):
        producer.enqueue({"prompt": f"queued {i}", "quality": "1K"}, producer="alice")
    producer.enqueue({"prompt": "other", "quality": "1K"}, producer="bob")
    stack.emulator.add_fault(endpoint="create", action="fail_task",
                             code="content_policy_violation", match="BAD")  # fmt: skip
    bad = producer.enqueue({"prompt": "BAD one", "quality": "1K"}, producer="bob").job_id
    stack.start_worker()
    stack.wait_all(producer, [bad])

    def listed(*args: str) -> list[dict[str, object]]:
        done = nbq("jobs", *args, "--json", env=_env(stack))
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))

    failed = listed("--state", "failed")
    assert [(j["job_id"], j["error"]["code"]) for j in failed] == [  # type: ignore[index]
        (bad, "content_policy_violation")
    ]
    assert {j["producer"] for j in listed("--producer", "alice", "--limit", "100")} == {"alice"}
    assert len(listed("--limit", "2")) == 2
    table = nbq("jobs", "--state", "failed", env=_env(stack, COLUMNS="200"))
    assert bad in table.stdout and "content_policy_violation" in table.stdout
    wrong = nbq("jobs", "--state", "done", "--json", env=_env(stack))
    assert wrong.returncode == 2 and json.loads(wrong.stdout)["error"]["code"] == "invalid_state"


def test_batch_keeps_records_off_the_summary_unless_asked(stack: Stack, tmp_path: Path) -> None:
    batch = tmp_path / "b.jsonl"
    batch.write_text("\n".join(json.dumps({"prompt": f"b {i}", "quality": "1K"})
                               for i in range(2)) + "\n")  # fmt: skip
    plain = nbq("batch", str(batch), env=_env(stack))
    assert plain.returncode == 0, plain.stderr
    assert "batch summary" in plain.stdout and '"job_id"' not in plain.stdout
    as_json = nbq("batch", str(batch), "--json", env=_env(stack))
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(records) == 2 and all(r["state"] == "queued" for r in records)
    assert "batch summary" in as_json.stderr


def _read_pty(fd: int, until: float, sink: bytearray, stop: re.Pattern[bytes]) -> None:
    while time.monotonic() < until and not stop.search(sink):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            sink.extend(chunk)


def test_the_wait_screen_updates_live_on_a_terminal(stack: Stack) -> None:
    # Given a queued job and no worker yet
    producer = stack.producer()
    job_id = producer.enqueue({"prompt": "live", "quality": "1K"}).job_id
    # When `nbq wait` runs on a terminal
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "wait", job_id],
        env=_env(stack, COLUMNS="160", TERM="xterm"), stdin=terminal, stdout=terminal,
        stderr=terminal, close_fds=True,
    )  # fmt: skip
    os.close(terminal)
    screen = bytearray()
    try:
        _read_pty(controller, time.monotonic() + 30, screen, re.compile(rb"queued.*polls 0.*\ds"))
        frames_before = len(re.findall(rb"\d+\.\ds", bytes(screen)))
        # Then it shows the queued job and its elapsed time ticking
        _read_pty(controller, time.monotonic() + 3, screen, re.compile(rb"(?!)"))
        stack.start_worker()
        _read_pty(controller, time.monotonic() + 90, screen, re.compile(rb"stored"))
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", bytes(screen)).decode(errors="replace")
    elapsed = set(re.findall(r"(\d+\.\d)s", text))
    assert frames_before >= 1 and len(elapsed) >= 4, text[-2000:]
    assert f"job {job_id}" in text and "queued" in text and "polls 0" in text
    assert "stored" in text and proc.returncode == 0


def test_without_a_terminal_the_wait_prints_only_the_final_json(stack: Stack) -> None:
    stack.start_worker()
    job_id = stack.producer().enqueue({"prompt": "quiet", "quality": "1K"}).job_id
    done = nbq("wait", job_id, "--json", env=_env(stack))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "stored" and done.stderr == ""
