"""HTTP server spans for the ingress when tracing is on (``workers/tracing.py``).

The maintained ASGI instrumentation (``opentelemetry-instrumentation-asgi``, in the
``[otel]`` extra) makes one SERVER span per request: it continues the caller's trace when
the request carries a W3C ``traceparent`` (a producer service's own trace goes on through
``POST /v1/jobs``), and the job's ``nbq.enqueue`` span, started inside the request, is its
child. So a job created over HTTP is one trace from the caller's request to its download.

What the instrumentation would put in attributes is narrowed here, because a callback's
URL carries its job's token in the query string (``?token=...``):

- it never sees a query string: :class:`ServerSpanMiddleware` hands it the request with an
  empty one and the inner layer gives the real one back to the app;
- the span is named ``METHOD /route/{template}`` and carries ``http.route`` (the
  template, as the access log shows it) once the router matched, never a concrete path
  in its name;
- request headers are captured only if an operator asks for them
  (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``), and then
  ``Authorization`` and cookies are always sanitized.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanobanana_queue.producers.ingress.accesslog import UNMATCHED, route_template

#: Where the request's query string waits while the instrumentation looks at the request.
_HIDDEN_QUERY: Final = "nbq.query_string"
#: Header values replaced by ``[REDACTED]`` whenever headers are captured at all.
SANITIZED_HEADERS: Final = ("authorization", "cookie", "set-cookie", "proxy-authorization")
ATTR_HTTP_ROUTE: Final = "http.route"


class ServerSpanMiddleware:
    """The outermost layer of the ingress with tracing on: a SERVER span per request.

    Its ``app`` is the instrumentation's middleware: FastAPI versions with their own
    telemetry find it there and leave the request to it (one server span, not two; theirs
    would record the query string, token included)."""

    def __init__(self, app: ASGIApp) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.util.http import (
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
            get_custom_headers,
        )

        sanitized = [
            *get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS),
            *SANITIZED_HEADERS,
        ]
        self.app = OpenTelemetryMiddleware(
            _RouteNamed(app),
            default_span_details=_span_details,
            http_capture_headers_sanitize_fields=sanitized,
            # one span per request: not one more per body chunk read or answer part sent
            exclude_spans=["receive", "send"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # The same scope dict travels down (the router writes the matched route into
            # it), so the query string is set aside in it, not in a copy.
            scope[_HIDDEN_QUERY] = scope.get("query_string", b"")
            scope["query_string"] = b""
        await self.app(scope, receive, send)


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The span's name before routing: the method alone (renamed once the route is known)."""
    return str(scope.get("method") or "HTTP"), {}


class _RouteNamed:
    """Inside the instrumentation: the query string back for the app, and the server span
    named after the route template the router matched, when the answer starts (the
    instrumentation ends the span as the answer's last part goes out)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from opentelemetry import trace

        if _HIDDEN_QUERY in scope:
            scope["query_string"] = scope.pop(_HIDDEN_QUERY)
        span = trace.get_current_span()  # the server span, while it is the current one

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start" and span.is_recording():
                route = route_template(scope)
                if route != UNMATCHED:
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attribute(ATTR_HTTP_ROUTE, route)
            await send(message)

        await self.app(scope, receive, named)
