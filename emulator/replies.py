"""Responses in the vendor's shapes: JSON bodies and the error object.

Handlers raise :class:`EmulatedApiError`; the app turns it into
``{"error": {"code", "message", "type"}}`` with the right status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from nanobanana_queue.emulator import jsonio
from nanobanana_queue.emulator.constants import ERROR_CODES, ERROR_MESSAGES, ERROR_TYPES


class EmulatedApiError(Exception):
    """An error answer of the vendor API (status + error object)."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code or ERROR_CODES.get(status, str(status))
        self.message = message or ERROR_MESSAGES.get(status, "Error")
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(f"{status} {self.code}: {self.message}")

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "type": self.error_type,
        }
        error.update(self.extra)
        return {"error": error}

    def response(self) -> Response:
        return json_response(self.body(), self.status, self.headers)


def invalid(field: str, problem: str) -> EmulatedApiError:
    """A 400 whose message names the offending field."""
    return EmulatedApiError(400, f"Invalid parameter '{field}': {problem}")


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(jsonio.dumps(value), status, headers, media_type="application/json")


def format_seconds(value: float) -> str:
    """``Retry-After`` value: an integer when whole (as HTTP has it), else a decimal."""
    if value == int(value):
        return str(int(value))
    return f"{value:.3f}".rstrip("0")
