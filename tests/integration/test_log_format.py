"""The production log setting (``NBQ_LOG_JSON=true``): every line a worker, the ingress and
the emulator write — Celery's, kombu's and uvicorn's records and the worker's banner
included — is one JSON object, and the ingress logs each request (route template, status,
duration, producer; never a query string or a token) and counts it in the HTTP metrics.
A configuration error that stops a process before its logging is set up is a JSON line
too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from nanobanana_queue.workers import metrics
from tests.producers.ingress.serving import TOKEN, enable_ingress, start_ingress
from tests.support.emulator_server import TEST_API_KEY, TEST_ARGS
from tests.support.procs import ROOT, free_port, python_exe, start, stop, wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

#: Sent in a query string the access log must never show.
QUERY_SECRET = "query-secret-never-logged"


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every non-empty line of ``path`` as a JSON object; the first line that is not fails."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"{path.name}: a line that is not JSON: {line!r}")
        assert isinstance(event, dict), line
        events.append(event)
    return events


def test_a_worker_and_the_ingress_write_one_json_object_per_line(stack: Stack) -> None:
    # Given the production log setting, the ingress (uvicorn at info) and a worker
    stack.overrides["NBQ_LOG_JSON"] = "true"
    server = start_ingress(stack, enable_ingress(stack), log_level="info")
    try:
        stack.start_worker(name="json")
        # When a producer enqueues a job and reads it (a query string on the read), and a
        # request without a token is refused
        with server.client() as client:
            created = client.post("/v1/jobs", json={"prompt": "json logs", "quality": "1K"})
            job_id = created.json()["job_id"]
            assert client.get(f"/v1/jobs/{job_id}", params={"q": QUERY_SECRET}).is_success
        refused = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10, trust_env=False)
        assert refused.status_code == 401
        stack.wait_all(stack.producer(), [job_id])
    finally:
        server.stop()
        stack.stop_workers()  # their shutdown lines too
    # Then every line of both processes is a JSON object
    worker = json_lines(stack.dir / "worker-json.log")
    ingress = json_lines(stack.dir / "ingress.log")
    # And the worker's hold Celery's own records, its banner as an event and the stages'
    assert any(str(e.get("logger", "")).startswith("celery") for e in worker)
    assert any(e["event"] == "worker_started" and e["hostname"] == "json@test" for e in worker)
    assert any(e.get("job_id") == job_id for e in worker)
    # And the ingress's hold uvicorn's records and one access event per request
    assert any(str(e.get("logger", "")).startswith("uvicorn") for e in ingress)
    access = {
        (e["method"], e["route"], e["status"], e["producer"])
        for e in ingress
        if e["event"] == "http_request"
    }
    assert {
        ("POST", "/v1/jobs", 201, "svc"),
        ("GET", "/v1/jobs/{job_id}", 200, "svc"),
        ("GET", "/v1/jobs/{job_id}", 401, None),
    } <= access
    text = (stack.dir / "ingress.log").read_text(errors="replace")
    assert QUERY_SECRET not in text and TOKEN not in text
    # And each request is counted by route template and status
    counted = stack.redis.client().hgetall(metrics.counter_key("nbq", metrics.C_HTTP_REQUESTS))
    assert counted[metrics.label_field("POST", "/v1/jobs", 201).encode()] == b"1"
    assert counted[metrics.label_field("GET", "/v1/jobs/{job_id}", 401).encode()] == b"1"


def test_the_emulator_writes_one_json_object_per_line(tmp_path: Path) -> None:
    # Given the emulator (uvicorn at info) under the production log setting
    port = free_port()
    log = tmp_path / "emulator.log"
    proc = start(
        [
            python_exe(),
            "-m",
            "nanobanana_queue.emulator",
            "--port",
            str(port),
            "--log-level",
            "info",
            *TEST_ARGS,
        ],
        env={**os.environ, "NBQ_LOG_JSON": "true"},
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                return httpx.get(f"{url}/_emulator/health", timeout=1, trust_env=False).is_success
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout_s=30, what="the emulator")
        # When it answers a request with a key and one without
        create = f"{url}/v1/images/generations"
        body = {"model": "nano-banana-2-beta", "prompt": "json emulator"}
        headers = {"Authorization": f"Bearer {TEST_API_KEY}"}
        assert httpx.post(create, json=body, headers=headers, trust_env=False).is_success
        assert httpx.post(create, json=body, trust_env=False).status_code == 401
    finally:
        stop(proc)  # its shutdown lines too
    # Then every line it wrote is a JSON object, uvicorn's records among them
    events = json_lines(log)
    assert any(str(e.get("logger", "")).startswith("uvicorn") for e in events), events


def the_one_json_event(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Runs ``python *args``, which must exit 2 printing nothing on stdout and exactly one
    non-blank line on stderr: that line, parsed as JSON."""
    done = subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    event: dict[str, Any] = json.loads(line)
    return event


def test_a_configuration_error_before_logging_is_set_up_is_a_json_line() -> None:
    # Given the production log setting and a setting a worker cannot read
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBQ_")}
    env.update({"NBQ_LOG_JSON": "true", "NBQ_POLL_MIN_INTERVAL_S": "not-a-number"})
    # When a worker starts
    # Then it stops (exit 2) with one JSON event naming the variable, and nothing else
    event = the_one_json_event(["-m", "nanobanana_queue.producers.cli.main", "worker"], env)
    assert (event["event"], event["level"]) == ("configuration_error", "error")
    assert "NBQ_POLL_MIN_INTERVAL_S" in event["message"]


#: Runs ``nbq`` with some modules hidden, as on an install without their extra.
WITHOUT_MODULES = """
import importlib.util, sys
real, hidden = importlib.util.find_spec, set(sys.argv[1].split(","))
importlib.util.find_spec = lambda name, *a, **k: None if name in hidden else real(name, *a, **k)
sys.argv = ["nbq", *sys.argv[2:]]
from nanobanana_queue.producers.cli.main import app
app()
"""


@pytest.mark.parametrize(
    ("hidden", "argv", "event", "said"),
    [
        ("PIL", ["emulator"], "configuration_error", "needs the [emulator] extra"),
        ("minio", ["worker"], "configuration_error", "needs the [worker] extra"),
        ("", ["emulator", "--image-format", "bmp"], "option_error", "--image-format"),
    ],
    ids=["emulator-extra", "worker-extra", "emulator-option"],
)
def test_a_missing_extra_or_a_bad_emulator_option_is_one_json_event(
    hidden: str, argv: list[str], event: str, said: str
) -> None:
    # Given the production log setting
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBQ_")}
    env.update({"NBQ_LOG_JSON": "true", "NBQ_EVOLINK_API_KEY": "test-key-not-real"})
    # When a command stops before it runs (an extra missing, an option refused)
    # Then it exits 2 with one JSON event saying why, and nothing else
    logged = the_one_json_event(["-c", WITHOUT_MODULES, hidden, *argv], env)
    assert (logged["event"], logged["level"]) == (event, "error")
    assert said in logged["message"]
