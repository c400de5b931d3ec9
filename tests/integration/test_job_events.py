"""``GET /v1/jobs/{id}/events`` on real processes: an SSE client follows a job to its end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.producers.ingress.serving import enable_ingress, start_ingress
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


Event = tuple[str, str, dict[str, Any]]


def _stream(client: httpx.Client, url: str, headers: dict[str, str]) -> Iterator[Event]:
    """Each (id, event, data) of one stream as it arrives, until the server closes it."""
    with client.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            yield fields["id"], fields["event"], json.loads(fields["data"])
            fields = {}


def test_an_sse_client_follows_a_job_from_queued_to_stored_and_resumes(stack: Stack) -> None:
    # Given a queued job and no worker yet
    server = start_ingress(stack, enable_ingress(stack))
    try:
        with server.client() as client:
            job = client.post("/v1/jobs", json={"prompt": "x", "quality": "1K"}).json()
            url = f"/v1/jobs/{job['job_id']}/events"
            # When a client follows it, and a worker starts once it saw the job queued
            stream = _stream(client, url, {})
            events = [next(stream)]
            assert events[0][2]["state"] == "queued"
            stack.start_worker()
            events += list(stream)
            # Then it sees the job queued (or later), its changes, and one end, stored
            assert events[0][1] == "job"
            assert events[-1][1] == "end" and events[-1][2]["state"] == "stored"
            assert [e for _, e, _ in events].count("end") == 1
            ids = [int(i) for i, _, _ in events]
            assert ids == sorted(ids)
            # And a reconnect from the first event misses nothing: the end again
            resumed = list(_stream(client, url, {"Last-Event-ID": events[0][0]}))
            assert resumed[-1][1] == "end" and resumed[-1][2]["state"] == "stored"
            # And a caller without a valid token gets nothing
            other = client.get(url, headers={"Authorization": "Bearer nope"})
            assert other.status_code == 401
    finally:
        server.stop()
