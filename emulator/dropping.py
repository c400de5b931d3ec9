"""Closing a connection without an answer, which ASGI itself cannot express.

A handler marks the request (``mark_drop``) and returns any response; the outer
:class:`DropConnections` layer then closes the socket instead of sending it. Under
uvicorn the transport is reached through the server's ``send`` (its request cycle);
with no transport (in-process test clients) :class:`ConnectionDroppedError` is raised, which
those clients surface as an exception, like a dropped connection.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DROP_KEY = "emulator.drop"


class ConnectionDroppedError(ConnectionError):
    """Raised in-process where there is no socket to close."""


def mark_drop(request: Request) -> Response:
    """Ask the outer layer to close the connection instead of answering."""
    request.scope[DROP_KEY] = True
    return Response(b"", 500)


def close_connection(send: Send) -> bool:
    """Close the client socket behind uvicorn's ``send``; ``False`` if there is none."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    cycle.disconnected = True  # type: ignore[union-attr]  # uvicorn then sends nothing
    transport.close()
    return True


class DropConnections:
    """Outermost ASGI layer: honours :func:`mark_drop`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def guarded_send(message: Message) -> None:
            if scope.get(DROP_KEY):
                if message["type"] == "http.response.start" and not close_connection(send):
                    raise ConnectionDroppedError("emulator dropped the connection")
                return
            await send(message)

        await self.app(scope, receive, guarded_send)
