"""``create_app(config)``: the ASGI app (Starlette, wrapped to allow dropped connections)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from nanobanana_queue.emulator.api_routes import VendorApi
from nanobanana_queue.emulator.config import EmulatorConfig
from nanobanana_queue.emulator.control_routes import ControlApi
from nanobanana_queue.emulator.dropping import DropConnections
from nanobanana_queue.emulator.file_routes import FileApi
from nanobanana_queue.emulator.replies import EmulatedApiError
from nanobanana_queue.emulator.state import EmulatorState

STATE_ATTR = "emulator_state"


class EmulatorApp(DropConnections):
    """The ASGI app; ``.state`` exposes the in-memory state to in-process tests."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        super().__init__(app)
        self.state = state


def create_app(config: EmulatorConfig, *, clock: Callable[[], float] | None = None) -> EmulatorApp:
    """The emulator as an ASGI app; ``clock`` (unix seconds) is injectable for tests."""
    state = EmulatorState.build(config, clock or time.time)
    vendor, files, control = VendorApi(state), FileApi(state), ControlApi(state)
    routes = [
        Route("/v1/images/generations", vendor.create, methods=["POST"]),
        Route("/v1/tasks/{task_id}", vendor.query, methods=["GET"]),
        Route("/files/{task_id}/{name}", files.download, methods=["GET"]),
        Route("/_emulator/faults", control.add_fault, methods=["POST"]),
        Route("/_emulator/faults", control.list_faults, methods=["GET"]),
        Route("/_emulator/faults", control.clear_faults, methods=["DELETE"]),
        Route("/_emulator/faults/{rule_id}", control.delete_fault, methods=["DELETE"]),
        Route("/_emulator/credits", control.set_credits, methods=["PUT"]),
        Route("/_emulator/credits", control.get_credits, methods=["GET"]),
        Route("/_emulator/idempotency", control.set_idempotency, methods=["PUT"]),
        Route("/_emulator/stats", control.stats, methods=["GET"]),
        Route("/_emulator/tasks", control.list_tasks, methods=["GET"]),
        Route("/_emulator/tasks/{task_id}", control.task, methods=["GET"]),
        Route("/_emulator/reset", control.reset, methods=["POST"]),
        Route("/_emulator/health", _health, methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await state.callbacks.aclose()

    inner = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed},
    )
    setattr(inner.state, STATE_ATTR, state)
    return EmulatorApp(inner, state)


async def _health(request: Request) -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


async def _not_found(request: Request, exc: Exception) -> Response:
    return EmulatedApiError(404, f"No route for {request.url.path}", code="not_found").response()


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    # RFC 9110: a 405 lists the methods the resource supports (Starlette's exception has them).
    allow = dict(getattr(exc, "headers", None) or {})
    return EmulatedApiError(
        405,
        "Method not allowed",
        code="method_not_allowed",
        error_type="invalid_request_error",
        headers=allow,
    ).response()
