"""The production log setting (``NBQ_LOG_JSON=true``): every line a worker and the ingress
write — Celery's, kombu's and uvicorn's records and the worker's banner included — is one
JSON object, and the ingress logs each request (route template, status, duration,
producer; never a query string or a token) and counts it in the HTTP metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from nanobanana_queue.workers import metrics
from tests.producers.ingress.serving import TOKEN, enable_ingress, start_ingress
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
