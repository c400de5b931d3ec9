"""The ingress's own error answers: ``{"error": {"code": "...", "message": "..."}}``.

Validation problems keep FastAPI's 422 shape (``{"detail": [{"loc": [...], ...}]}``),
which names the field; everything else the ingress refuses is an :class:`ApiError`.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every non-validation error the ingress answers."""

    error: ErrorDetail


class ApiError(Exception):
    """An answer other than 2xx or 422, with a stable ``code`` for programs."""

    def __init__(self, status_code: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers


def error_response(status_code: int, code: str, message: str, *,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, headers=exc.headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


#: OpenAPI ``responses`` entries shared by the routes.
def documented(*codes: int) -> dict[int | str, dict[str, object]]:
    descriptions = {
        401: "missing or unknown bearer token",
        404: "no such resource for this producer",
        409: "conflict with the resource's state",
        413: "body larger than NBQ_MAX_BODY_BYTES",
        429: "daily credit budget would be exceeded",
        503: "a dependency is unavailable",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}
