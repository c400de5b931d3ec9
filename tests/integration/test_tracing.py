"""One trace per job across real processes (issue 30, docs/operations.md "Tracing").

``nbq submit`` enqueues a job and a real worker (prefork: tasks in forked children)
runs it, both exporting over OTLP/HTTP to a collector this test serves on loopback. The
job is one trace: the enqueue in the CLI process is its root; generate (intake and
submit), every re-scheduled poll and the download are spans of it, with the API calls,
the job store and S3 as child spans; no attribute carries a secret.

Through the ingress (``nbq serve``) the request is a server span that continues the
calling service's trace (its ``traceparent`` header) and the enqueue is its child; a poll
an Evolink callback triggers, and a poll ``nbq reconcile`` re-drives after the job's poll
chain was lost, join the job's trace from their own processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from nanobanana_queue.workers.broker_queues import queue_keys
from nanobanana_queue.workers.callbacks import callback_token
from nanobanana_queue.workers.contract import QUEUE_POLL
from nanobanana_queue.workers.jobs.state import JobState
from tests.producers.ingress.serving import (
    SECRET,
    TOKEN,
    enable_ingress,
    slow_stack,
    start_ingress,
    wait_for_state,
)
from tests.support.emulator_server import EmulatorServer
from tests.support.procs import ROOT, wait_until
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server
from tests.support.stack import API_KEY, Stack

pytestmark = [pytest.mark.integration]

JOB_ID = "trace-1"
NBQ = [sys.executable, "-m", "nanobanana_queue.producers.cli.main"]


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    attributes: dict[str, Any]
    kind: int = 0


class Collector:
    """An OTLP/HTTP trace receiver on loopback: every exported span, decoded."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        lock = threading.Lock()
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    spans.extend(_decode(request))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _decode(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex(),
                    name=span.name,
                    service=str(resource.get("service.name")),
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    kind=span.kind,
                )


@pytest.fixture
def collector() -> Iterator[Collector]:
    the_collector = Collector()
    yield the_collector
    the_collector.close()


def _otel_env(collector: Collector, service: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s (the default is 5 s)
    }


def test_one_job_is_one_trace_from_enqueue_through_every_stage(
    tmp_path: Path,
    redis_server: RedisServer,
    session_s3: S3Server,
    emulator_factory: Any,
    collector: Collector,
) -> None:
    # Given an API whose tasks take 1.5 s, polled at least every 0.3 s from the start:
    # the poll is re-scheduled several times whatever the jitter
    emulator: EmulatorServer = emulator_factory("--fixed-duration", "150")
    stack = Stack(
        redis=redis_server,
        s3=session_s3,
        emulator=emulator,
        dir=tmp_path,
        overrides={"NBQ_POLL_FIRST_FACTOR": "0.01", "NBQ_POLL_MAX_INTERVAL_S": "0.3"},
    )
    try:
        stack.start_worker(pool="prefork", concurrency=2, extra_env=_otel_env(collector, "w"))
        # When a producer process enqueues one job with tracing on
        done = subprocess.run(
            [*NBQ, "submit", "a traced cat", "--job-id", JOB_ID, "--quality", "1K"],
            env={**os.environ, **stack.env(), **_otel_env(collector, "cli")},
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        producer = stack.producer()
        record = stack.wait_all(producer, [JOB_ID])[JOB_ID]
        assert record.state is JobState.STORED, record.error
        # Then (once the worker exported the download's spans) ...
        wait_until(
            lambda: any(s.name == "run/nbq.download" for s in collector.spans),
            timeout_s=30,
            what="the download's span",
        )
    finally:
        stack.stop_workers()
    spans = list(collector.spans)
    [root] = [s for s in spans if s.name == "nbq.enqueue"]
    trace = [s for s in spans if s.trace_id == root.trace_id]
    names = [s.name for s in trace]
    # ... the enqueue in the CLI process is the root of the job's one trace
    assert root.service == "cli" and root.parent_id == ""
    assert root.attributes["nbq.job_id"] == JOB_ID
    assert {s.trace_id for s in spans if s.attributes.get("nbq.job_id") == JOB_ID} == {
        root.trace_id
    }
    # every stage ran in it, in the worker process
    for stage in ("nbq.generate", "nbq.poll", "nbq.download"):
        assert f"run/{stage}" in names, names
        assert f"apply_async/{stage}" in names, names
    # the poll was re-scheduled at least twice (published from a running poll) in it
    by_id = {s.span_id: s for s in trace}
    repolls = [
        s
        for s in trace
        if s.name == "apply_async/nbq.poll" and by_id[s.parent_id].name == "run/nbq.poll"
    ]
    assert len(repolls) >= 2, names
    assert record.polls >= 3
    # the stage spans name the job and the Evolink task
    download = next(s for s in trace if s.name == "run/nbq.download")
    assert download.attributes["nbq.job_id"] == JOB_ID
    assert download.attributes["nbq.evolink_task_id"] == record.evolink_task_id
    # the API calls, the job store and S3 are child spans of the stages
    methods = {
        (s.attributes.get("http.request.method") or s.attributes.get("http.method")) for s in trace
    }
    assert {"POST", "GET", "PUT"} <= methods, names
    assert any(
        s.attributes.get("db.system") == "redis" or "db.system.name" in s.attributes for s in trace
    )
    assert all(s.parent_id in by_id for s in trace if s is not root), "a span outside the trace"
    # no secret in any attribute (API key, S3 keys), no URL with a query or password
    secrets = [
        API_KEY,
        *[v for k, v in stack.env().items() if k.startswith("NBQ_S3_") and "KEY" in k],
    ]
    for span in spans:
        for key, value in span.attributes.items():
            text = str(value)
            assert not any(secret in text for secret in secrets), (span.name, key)
            if text.startswith("http"):
                assert "?" not in text and "@" not in text, (span.name, key, text)
    # and the worker's log lines carry the trace id, and its stage lines the job, the
    # Celery task and the Evolink task
    logs = stack.worker_logs()
    assert f"trace_id={root.trace_id}" in logs
    events = ("task_created", "still_generating", "job_stored")
    stage_lines = [line for line in logs.splitlines() if any(e in line for e in events)]
    assert len(stage_lines) >= 3, logs[-2000:]
    for line in stage_lines:
        assert f"job_id={JOB_ID}" in line and "celery_task_id=" in line, line
        assert f"evolink_task_id={record.evolink_task_id}" in line, line
        assert f"trace_id={root.trace_id}" in line, line


def _secrets_in_attributes(spans: list[Span], secrets: list[str]) -> list[tuple[str, str]]:
    """``(span, attribute)`` of every attribute (or span name) holding one of ``secrets``,
    or a URL with a query string or a password."""
    found = []
    for span in spans:
        if any(secret in span.name for secret in secrets) or "?" in span.name:
            found.append((span.name, "<name>"))
        for key, value in span.attributes.items():
            text = str(value)
            url_with_more = text.startswith("http") and ("?" in text or "@" in text)
            if url_with_more or any(secret in text for secret in secrets):
                found.append((span.name, key))
    return found


#: The calling service's own trace, as its HTTP client would send it (W3C traceparent).
CALLER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"
#: Sent in a query string no span may show.
QUERY_SECRET = "query-secret-never-traced"


def test_an_ingress_request_continues_the_callers_trace_and_the_job_joins_it(
    tmp_path: Path, redis_server: RedisServer, session_s3: S3Server, collector: Collector
) -> None:
    # Given the ingress (Evolink's callbacks on) and a worker, both exporting spans, and
    # an API whose tasks take 5 s
    stack = slow_stack(tmp_path, redis_server, session_s3, fixed_duration_s=500)
    port = enable_ingress(stack)
    server = start_ingress(stack, port, log_level="info", extra_env=_otel_env(collector, "ingress"))
    try:
        stack.start_worker(extra_env=_otel_env(collector, "w"))
        # When a calling service, inside its own trace, creates a job over HTTP and reads
        # it with a query string
        traceparent = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
        with server.client() as client:
            created = client.post(
                "/v1/jobs",
                json={"prompt": "traced over http", "quality": "1K"},
                headers={"traceparent": traceparent},
            )
            assert created.status_code == 201, created.text
            job_id = created.json()["job_id"]
            assert client.get(f"/v1/jobs/{job_id}", params={"q": QUERY_SECRET}).is_success
        # and a callback arrives while its task is processing (it sends a poll at once)
        task_id = wait_for_state(server, job_id, {"generating"})["evolink_task_id"]
        hint = server.callback(job_id, {"id": task_id, "status": "processing", "progress": 50})
        assert hint.json() == {"outcome": "poll_sent"}, hint.text
        record = stack.wait_all(stack.producer(), [job_id])[job_id]
        assert record.state is JobState.STORED, record.error
        # (once the worker exported the download's spans)
        wait_until(
            lambda: any(s.name == "run/nbq.download" for s in collector.spans),
            timeout_s=30,
            what="the download's span",
        )
    finally:
        server.stop()
        stack.stop_workers()
        stack.emulator.stop()
    spans = list(collector.spans)
    by_id = {s.span_id: s for s in spans}
    # Then the POST is a server span of the caller's trace, named by its route template
    [post] = [s for s in spans if s.name == "POST /v1/jobs"]
    assert (post.service, post.kind) == ("ingress", ProtoSpan.SPAN_KIND_SERVER)
    assert (post.trace_id, post.parent_id) == (CALLER_TRACE_ID, CALLER_SPAN_ID)
    assert post.attributes["http.route"] == "/v1/jobs"
    # and the job's enqueue is its child: the job's trace is the caller's
    [enqueue] = [s for s in spans if s.name == "nbq.enqueue"]
    assert enqueue.parent_id == post.span_id and enqueue.attributes["nbq.job_id"] == job_id
    trace = [s for s in spans if s.trace_id == CALLER_TRACE_ID]
    for stage in ("run/nbq.generate", "run/nbq.poll", "run/nbq.download"):
        assert any(s.name == stage and s.service == "w" for s in trace), stage
    # And Evolink's callback is a server span too, and the poll it sends (from the
    # ingress process) is in the job's trace, followed by the worker's run of it
    callbacks = [s for s in spans if s.name == "POST /v1/callbacks/evolink/{job_id}"]
    assert {s.kind for s in callbacks} == {ProtoSpan.SPAN_KIND_SERVER}
    sent = [s for s in trace if s.name == "apply_async/nbq.poll" and s.service == "ingress"]
    assert sent, [s.name for s in trace]
    assert any(s.name == "run/nbq.poll" and by_id.get(s.parent_id) in sent for s in trace)
    # And the read is named by its template, not its path, and shows no query string
    reads = [s for s in spans if s.name == "GET /v1/jobs/{job_id}"]
    assert reads and {s.attributes["http.route"] for s in reads} == {"/v1/jobs/{job_id}"}
    # And no attribute of any process holds a token, a key or a query string
    secrets = [
        API_KEY,
        TOKEN,
        SECRET,
        callback_token(SECRET, job_id),
        QUERY_SECRET,
        *[v for k, v in stack.env().items() if k.startswith("NBQ_S3_") and "KEY" in k],
    ]
    assert _secrets_in_attributes(spans, secrets) == []
    # And the ingress's access log line of the POST carries the caller's trace id
    logs = (stack.dir / "ingress.log").read_text(errors="replace")
    assert any(
        "http_request" in line and "route=/v1/jobs " in line and CALLER_TRACE_ID in line
        for line in logs.splitlines()
    ), logs[-2000:]


def test_a_poll_re_driven_by_nbq_reconcile_joins_the_jobs_trace(
    tmp_path: Path,
    redis_server: RedisServer,
    session_s3: S3Server,
    emulator_factory: Any,
    collector: Collector,
) -> None:
    # Given a job enqueued by `nbq submit` whose create a submit-only worker sent (tasks
    # of 2 s), no worker reconciling on its own
    emulator: EmulatorServer = emulator_factory("--fixed-duration", "200")
    stack = Stack(
        redis=redis_server,
        s3=session_s3,
        emulator=emulator,
        dir=tmp_path,
        overrides={"NBQ_RECONCILE_IN_WORKER": "false", "NBQ_STUCK_AFTER_S": "1"},
    )
    env = {**os.environ, **stack.env()}
    try:
        stack.start_worker(queues="submit", name="submit", extra_env=_otel_env(collector, "w"))
        done = subprocess.run(
            [*NBQ, "submit", "a lost chain", "--job-id", JOB_ID, "--quality", "1K"],
            env={**env, **_otel_env(collector, "cli")},
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        producer = stack.producer()
        wait_until(
            lambda: producer.status(JOB_ID).state is JobState.GENERATING,
            timeout_s=30,
            what="the job generating",
        )
        stack.stop_workers()
        # When its poll chain is lost (the waiting poll message gone from the broker)
        assert stack.redis.client().delete(*queue_keys(QUEUE_POLL)) == 1

        # and `nbq reconcile` re-drives it once it is idle past NBQ_STUCK_AFTER_S
        def re_driven() -> bool:
            run = subprocess.run(
                [*NBQ, "reconcile", "--once"],
                env={**env, **_otel_env(collector, "reconcile")},
                cwd=ROOT,
                capture_output=True,
                timeout=60,
            )
            assert run.returncode == 0, run.stderr.decode(errors="replace")
            return b"re-driven: 1" in run.stdout

        wait_until(re_driven, timeout_s=30, interval_s=0.5, what="a re-drive")
        # and a worker takes the re-driven poll
        stack.start_worker(name="all", extra_env=_otel_env(collector, "w"))
        record = stack.wait_all(producer, [JOB_ID])[JOB_ID]
        assert record.state is JobState.STORED, record.error
        wait_until(
            lambda: any(s.name == "run/nbq.download" for s in collector.spans),
            timeout_s=30,
            what="the download's span",
        )
    finally:
        stack.stop_workers()
    spans = list(collector.spans)
    [root] = [s for s in spans if s.name == "nbq.enqueue"]
    # Then the re-drive's publish, in the reconcile process, is in the job's trace
    [redrive] = [s for s in spans if s.service == "reconcile" and s.name == "apply_async/nbq.poll"]
    assert redrive.trace_id == root.trace_id
    assert redrive.attributes.get("nbq.job_id", JOB_ID) == JOB_ID
    # and so are the poll it started in the worker and the download after it
    trace = [s for s in spans if s.trace_id == root.trace_id]
    assert any(s.name == "run/nbq.poll" and s.parent_id == redrive.span_id for s in trace)
    assert any(s.name == "run/nbq.download" for s in trace)
    assert {s.trace_id for s in spans if s.attributes.get("nbq.job_id") == JOB_ID} == {
        root.trace_id
    }
