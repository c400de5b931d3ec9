"""Read each request body once, bounded in size and time, and hand it on whole.

Refuses bodies over ``NBQ_MAX_BODY_BYTES`` with 413 — a ``Content-Length`` over the limit
before any byte is read, a chunked upload as soon as it passes the limit — and bodies
not complete within ``NBQ_INGRESS_BODY_TIMEOUT_S`` of the headers with 408 (a trickling
client holds nothing for longer). Both answers close the connection.

The chunks are joined once (``b"".join``): a body trickled as 40,000 one-byte messages
costs the same copying as one sent at once (``body += chunk`` was quadratic), and the
app behind receives one ``http.request`` message with the whole body.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanobanana_queue.producers.ingress.errors import error_response

#: A body piece smaller than this (with more to come) means a trickling client ...
COALESCE_BELOW_BYTES = 16 * 1024
#: ... whose next pieces are gathered for this long before the next read (seconds).
COALESCE_S = 0.01


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await error_response(400, "bad_content_length", "Content-Length is not a number")(
                scope, receive, send
            )
            return
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(scope, receive, send, 413)
            return
        try:
            async with asyncio.timeout(self.body_timeout_s):
                read = await self._read(receive)
        except TimeoutError:
            read = 408
        if isinstance(read, int):
            await self._refuse(scope, receive, send, read)
            return
        body, ending = read
        messages: list[Message] = [
            {"type": "http.request", "body": body, "more_body": ending is not None}
        ]
        if ending is not None:
            messages.append(ending)

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> tuple[bytes, Message | None] | int:
        """The whole body and the ``http.disconnect`` met reading it (if any), or 413."""
        parts: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts), message
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                return 413
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts), None
            if len(chunk) < COALESCE_BELOW_BYTES:
                # A trickle: let the server gather what arrives meanwhile, so this loop
                # wakes at most once per COALESCE_S, not once per network segment.
                await asyncio.sleep(COALESCE_S)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int) -> None:
        if status == 408:
            response = error_response(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.body_timeout_s:g} s",
                headers={"Connection": "close"},
            )
        else:
            response = error_response(
                413,
                "body_too_large",
                f"request body is larger than {self.max_body_bytes} bytes",
                headers={"Connection": "close"},
            )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length, None if absent, -1 if unparsable."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None
