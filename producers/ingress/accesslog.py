"""One access-log event and the HTTP metrics for every request the ingress answers.

uvicorn's own access log stays off: it writes the request line, and a callback's query
string carries that job's token. This logs only what an operator needs, nothing a client
chose beyond the method: the route's template (``/v1/jobs/{job_id}``, never the path or
its query string), the status, the duration and the producer the bearer token named
(never the token). The same request counts in ``nbq_http_requests_total`` and
``nbq_http_request_duration_seconds`` (``workers.metrics``, exported by ``nbq metrics``).
"""

from __future__ import annotations

import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.logs import get_logger

log = get_logger(__name__)

#: Methods logged and counted by name; any other is ``other`` (bounded label values).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Probes polled every few seconds: logged at debug, counted as any request.
PROBES = frozenset({"/healthz", "/readyz"})
#: The route of a request refused before routing (413, 400) or matching none (404).
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that answered (FastAPI puts it in the scope)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def producer_of(scope: Scope) -> str | None:
    """The producer ``current_producer`` authenticated for this request, if any."""
    state = scope.get("state")
    producer = state.get("producer") if isinstance(state, dict) else None
    return producer if isinstance(producer, str) else None


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception escaping the app: the server answers 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = route_template(scope)
            emit = log.debug if route in PROBES else log.info
            emit(
                "http_request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 1),
                producer=producer_of(scope),
            )
        # Off the event loop: a slow or unreachable Redis must not hold other requests.
        await anyio.to_thread.run_sync(metrics.http_request, method, route, status, seconds)
