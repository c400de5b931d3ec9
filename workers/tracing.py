"""OpenTelemetry tracing: one trace per job, off unless the standard ``OTEL_*`` variables
configure it (docs/operations.md "Tracing").

Off (the default), we import nothing of the SDK and every helper here is a no-op at the
cost of one boolean test (redis-py ≥ 7 imports the metrics SDK by itself when the extra is
installed: import time only, it exports nothing; docs/operations.md "Tracing").

On (``OTEL_TRACES_EXPORTER`` other than ``none``, or an
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, read by :class:`workers.settings.Settings`; the
``[otel]`` extra installed), each process gets a tracer provider with a batch processor
and the maintained instrumentations:

- Celery: a span per publish and per task run, the W3C ``traceparent`` in the message
  headers, so a job's submit, every re-scheduled poll (Celery retries and our countdown
  sends publish from inside the running task) and its download are one trace;
- httpx (the API calls and result downloads), redis-py (the job store), urllib3 (minio's
  S3 calls): child spans;
- the ingress's requests: server spans (``producers/ingress/spans.py``, ASGI), so a job
  enqueued over HTTP is a child of its request, in the caller's trace when it sent one.

The job record keeps the ``traceparent`` of its enqueue (``JobRecord.traceparent``), so a
message the reconciler re-drives, which no running task carries, joins the job's trace
(:func:`resumed`). Span attributes name the job and the Evolink task; no secret is ever
one: URLs are reduced to scheme, host and path (no userinfo, no query), and the
instrumentations record no headers or bodies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanobanana_queue.workers.settings import Settings

#: Set once :func:`configure_tracing` installed a provider in this process.
_on = False

#: Our own span names (the instrumentations name theirs: ``run/nbq.poll`` ...).
ENQUEUE_SPAN = "nbq.enqueue"
ATTR_JOB_ID = "nbq.job_id"
ATTR_EVOLINK_TASK_ID = "nbq.evolink_task_id"
ATTR_PRODUCER = "nbq.producer"


def enabled() -> bool:
    """Whether this process exports traces."""
    return _on


def exporter_names(settings: Settings) -> list[str]:
    """The span exporters the ``OTEL_*`` settings ask for ([] = tracing off)."""
    if settings.otel_sdk_disabled:
        return []
    names = [n.strip().lower() for n in (settings.otel_traces_exporter or "").split(",")]
    names = [n for n in names if n]
    if names:
        return [] if names == ["none"] else [n for n in names if n != "none"]
    if settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint:
        return ["otlp"]
    return []


def configure_tracing(settings: Settings, service_name: str) -> bool:
    """Install the tracer provider and the instrumentations, once per process; returns
    whether tracing is on. ``OTEL_SERVICE_NAME`` (read by the SDK) wins over
    ``service_name``; the exporters read their own ``OTEL_EXPORTER_*`` variables."""
    global _on
    if _on:
        return True
    names = exporter_names(settings)
    if not names:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: service_name}).merge(Resource.create())
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    _instrument()
    _on = True
    return True


def _exporter(name: str) -> Any:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        import sys

        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)
    from nanobanana_queue.workers.settings import ConfigError

    raise ConfigError(f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r} (otlp, console, none)")


def _instrument() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    CeleryInstrumentor().instrument()  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument(
        request_hook=_httpx_request_hook, async_request_hook=_httpx_async_request_hook
    )
    RedisInstrumentor().instrument()
    URLLib3Instrumentor().instrument(url_filter=safe_url)


def safe_url(url: str) -> str:
    """``url`` as a span may show it: scheme, host, port and path only (a password or a
    query string, e.g. a signed link's signature, never reaches the tracing backend)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(str(url))
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    host = (parts.hostname or "") + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


_URL_ATTRIBUTES = ("url.full", "http.url")


def _httpx_request_hook(span: Any, request: Any) -> None:
    if span is not None and span.is_recording():
        url = safe_url(str(request.url))
        for key in _URL_ATTRIBUTES:
            span.set_attribute(key, url)


async def _httpx_async_request_hook(span: Any, request: Any) -> None:
    _httpx_request_hook(span, request)


def flush() -> None:
    """Export what is buffered (a worker child exits without running atexit)."""
    if not _on:
        return
    from opentelemetry import trace

    with contextlib.suppress(Exception):
        trace.get_tracer_provider().force_flush(5000)  # type: ignore[attr-defined]


def annotate(*, job_id: str | None = None, evolink_task_id: str | None = None) -> None:
    """Name the job (and its Evolink task) on the current span."""
    if not _on:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if job_id:
        span.set_attribute(ATTR_JOB_ID, job_id)
    if evolink_task_id:
        span.set_attribute(ATTR_EVOLINK_TASK_ID, evolink_task_id)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (stored on a new job's record)."""
    if not _on:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def enqueue_span(producer: str | None) -> Iterator[Any]:
    """The root span of a job's trace, around ``Producer.enqueue`` (through the ingress,
    a child of the request's server span)."""
    if not _on:
        yield None
        return
    from opentelemetry import trace

    tracer = trace.get_tracer("nanobanana_queue")
    with tracer.start_as_current_span(ENQUEUE_SPAN, kind=trace.SpanKind.PRODUCER) as span:
        if producer:
            span.set_attribute(ATTR_PRODUCER, producer)
        yield span


@contextlib.contextmanager
def resumed(traceparent: str | None) -> Iterator[None]:
    """Run the block inside the job's stored trace context (a re-drive's publish joins the
    trace the job started at its enqueue)."""
    if not _on or not traceparent:
        yield
        return
    from opentelemetry import context
    from opentelemetry.propagate import extract

    token = context.attach(extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        context.detach(token)


def add_trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: ``trace_id`` and ``span_id`` of the current span on the line."""
    if not _on:
        return event_dict
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict
