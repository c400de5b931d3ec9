"""The ingress's own error answers: ``{"error": {"code": "...", "message": "..."}}``.

Validation problems keep FastAPI's 422 shape (``{"detail": [{"loc": [...], ...}]}``),
which names the field; everything else the ingress refuses is an :class:`ApiError`.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every non-validation error the ingress answers."""

    error: ErrorDetail


class ApiError(Exception):
    """An answer other than 2xx or 422, with a stable ``code`` for programs."""

    def __init__(
        self, status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, headers=exc.headers)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Framework errors (unparsable body, unknown path, wrong method) in the same shape."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        # Starlette lists only the first matching route's methods; list every route's.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


#: OpenAPI ``responses`` entries shared by the routes.
def documented(*codes: int) -> dict[int | str, dict[str, object]]:
    descriptions = {
        400: "the body could not be parsed",
        401: "missing or unknown bearer token",
        404: "no such resource for this producer",
        409: "conflict with the resource's state",
        413: "body larger than NBQ_MAX_BODY_BYTES",
        429: "daily credit budget would be exceeded",
        503: "a dependency is unavailable",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}
