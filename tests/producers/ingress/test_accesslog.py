"""The ingress's access log: one ``http_request`` event per answer, with the route's
template and the producer, never the path's values, the query string or the token."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from tests.producers.ingress.conftest import Ingress, auth


def test_every_answer_is_one_event_naming_the_route_template_never_the_path(
    ingress: Ingress,
) -> None:
    structlog.reset_defaults()  # every level reaches the capture
    with capture_logs() as events:
        # A producer reads a job (with a query string), a path no route matches, a probe
        read = ingress.client.get("/v1/jobs/job-7f3a9c?token=tok-in-query", headers=auth())
        missing = ingress.client.get("/no/such/route")
        ingress.client.get("/healthz")
    access = [
        (e["log_level"], e["method"], e["route"], e["status"], e["producer"])
        for e in events
        if e["event"] == "http_request"
    ]
    assert access == [
        ("info", "GET", "/v1/jobs/{job_id}", read.status_code, "alice"),
        ("info", "GET", "unmatched", missing.status_code, None),
        ("debug", "GET", "/healthz", 200, None),  # probes at debug: polled every few s
    ]
    assert all(e["duration_ms"] >= 0 for e in events if e["event"] == "http_request")
    text = repr(events)
    assert "tok-in-query" not in text and "job-7f3a9c" not in text
    assert auth()["Authorization"].split()[-1] not in text
