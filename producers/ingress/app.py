"""Assemble the ingress: routes, auth, body limit, error shapes.

uvicorn --factory producers.ingress.app:create_app     # or: nbq serve
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.ingress import (
    batch_routes,
    callback_routes,
    events_routes,
    health_routes,
    jobs_routes,
)
from nanobanana_queue.producers.ingress.accesslog import AccessLogMiddleware
from nanobanana_queue.producers.ingress.auth import TokenRegistry
from nanobanana_queue.producers.ingress.batches import BatchStore
from nanobanana_queue.producers.ingress.bodylimit import BodyLimitMiddleware
from nanobanana_queue.producers.ingress.context import IngressContext
from nanobanana_queue.producers.ingress.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    too_deep_handler,
    use_error_body_for_422,
    validation_error_handler,
)
from nanobanana_queue.producers.ingress.spans import ServerSpanMiddleware
from nanobanana_queue.producers.ingress.strictjson import StrictJsonMiddleware
from nanobanana_queue.workers import tracing
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.settings import Settings, get_settings

TITLE = "nanobanana-queue ingress"
VERSION = "1.0.0"
DESCRIPTION = (
    "Enqueue Nano Banana 2 Beta image generations and follow them. Every /v1/jobs and "
    "/v1/batches route needs `Authorization: Bearer <token>` (NBQ_INGRESS_TOKENS); a "
    "producer sees only its own jobs. /v1/callbacks/evolink is Evolink's callback "
    "receiver (authenticated by the per-job token in its URL)."
)

log = get_logger("nbq.ingress")


def create_app(settings: Settings | None = None, *, producer: Producer | None = None) -> FastAPI:
    """The ASGI app. Tests pass their own settings/producer; ``nbq serve`` passes none."""
    settings = settings or get_settings()
    producer = producer or Producer(settings)
    tokens = TokenRegistry.from_settings(settings)
    if not tokens.entries:
        log.warning(
            "ingress_without_tokens",
            message="NBQ_INGRESS_TOKENS is empty: every /v1/jobs request gets 401",
        )
    runtime = producer.runtime
    app = FastAPI(title=TITLE, version=VERSION, description=DESCRIPTION)
    app.state.ingress = IngressContext(
        settings=settings,
        producer=producer,
        tokens=tokens,
        batches=BatchStore(
            runtime.redis,
            runtime.store,
            prefix=settings.key_prefix,
            retention_s=settings.job_retention_s,
        ),
    )
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(RecursionError, too_deep_handler)
    _document_errors_as_served(app)
    app.add_middleware(StrictJsonMiddleware)  # inside the body limit (added after it)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.ingress_body_timeout_s,
    )
    app.add_middleware(AccessLogMiddleware)  # every answer, refusals included
    if tracing.enabled():  # outermost: the access log line carries the server span's ids
        app.add_middleware(ServerSpanMiddleware)
    for module in (jobs_routes, events_routes, batch_routes, health_routes, callback_routes):
        app.include_router(module.router)
    return app


def _document_errors_as_served(app: FastAPI) -> None:
    """The OpenAPI document shows the 422 the app really answers (ErrorBody)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = use_error_body_for_422(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
