"""Refuse ``NaN`` / ``Infinity`` in a JSON body with a 400 in the ingress's error shape.

Python's ``json`` accepts these non-standard tokens (RFC 8259 has no such numbers), so a
body like ``{"prompt": NaN}`` used to reach validation, whose 422 echoes the input — and
rendering a NaN back as JSON fails: a 500. This ASGI middleware sits inside the body
limit (the body is already bounded) and checks only bodies that contain such a token.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanobanana_queue.producers.ingress.errors import error_response

_TOKENS = (b"NaN", b"Infinity")


class _NonStandardConstantError(ValueError):
    pass


def _refuse_constant(name: str) -> None:
    raise _NonStandardConstantError(name)


def non_standard_constant(body: bytes) -> str | None:
    """The first ``NaN`` / ``Infinity`` / ``-Infinity`` the JSON parser meets, else None."""
    if not any(token in body for token in _TOKENS):
        return None
    try:
        json.loads(body, parse_constant=_refuse_constant)
    except _NonStandardConstantError as exc:
        return str(exc)
    except (ValueError, RecursionError):
        return None  # not JSON at all: the framework answers that as before
    return None


class StrictJsonMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        parts: list[bytes] = []
        while True:  # one message: the body limit hands the body on whole
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(parts)  # once: `body += chunk` was quadratic in the chunks
        constant = non_standard_constant(body)
        if constant is not None:
            response = error_response(
                400,
                "invalid_json",
                f"{constant} is not a JSON number (RFC 8259); send a number or null",
            )
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)
