"""``/healthz`` (the process answers) and ``/readyz`` (Redis, S3 and the broker answer)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from nanobanana_queue.producers.ingress.context import READY_TIMEOUT_S, Context, IngressContext
from nanobanana_queue.producers.ingress.schemas import Health, Readiness
from nanobanana_queue.workers.logs import get_logger

router = APIRouter(tags=["health"])
log = get_logger("nbq.ingress")


@router.get("/healthz")
def healthz() -> Health:
    """Liveness: no dependency is checked."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is unavailable"}},
)
def readyz(context: Context) -> JSONResponse:
    """Readiness: 200 when Redis, S3 and the broker answer; 503 naming the one that did not."""
    checks = {name: _safely(name, check, context) for name, check in CHECKS.items()}
    ok = all(checks.values())
    body = Readiness(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def _redis(context: IngressContext) -> bool:
    return bool(context.producer.runtime.redis.ping())


def _s3(context: IngressContext) -> bool:
    from nanobanana_queue.workers.storage.s3 import ObjectStore

    store = ObjectStore.from_settings(
        context.settings,
        connect_timeout_s=READY_TIMEOUT_S,
        read_timeout_s=READY_TIMEOUT_S,
        retries=0,
    )
    return store.ping()


def _broker(context: IngressContext) -> bool:
    return bool(context.broker().ping())


CHECKS: dict[str, Callable[[IngressContext], bool]] = {
    "redis": _redis,
    "s3": _s3,
    "broker": _broker,
}


def _safely(name: str, check: Callable[[IngressContext], bool], context: IngressContext) -> bool:
    try:
        return check(context)
    except Exception as exc:  # any failure means "not ready", named in the log
        log.warning("not_ready", dependency=name, error=type(exc).__name__)
        return False
