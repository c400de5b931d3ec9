"""Every error the ingress answers has one shape: ``{"error": {"code", "message", "field"?}}``.

Validation problems (422) name the first bad ``field`` (dotted path in the body, e.g.
``requests.3.size``) and quote pydantic's messages, each cut to a short excerpt: the
input itself is never echoed (FastAPI's default 422 returned a 3,000-character prompt
whole). Everything else the ingress refuses is an :class:`ApiError`.

Every answer's ``message`` is cut to :data:`MAX_MESSAGE_CHARS` and its ``field`` to
:data:`MAX_FIELD_CHARS` in :func:`error_response`, whatever built it: a 60,000-character
job id in a path is quoted as a short excerpt (it came back whole in a 60 kB 404). A body
nested deeper than the parser can recurse is a 400 ``invalid_json`` from any handler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

#: Longest quote of one validation message (the messages never carry the input itself).
MAX_MESSAGE_EXCERPT = 200
#: Validation problems listed in one message (the first names the ``field``).
MAX_PROBLEMS = 3
#: Longest ``message`` of any error answer (ids and inputs quoted in it are cut with it).
MAX_MESSAGE_CHARS = 600
#: Longest ``field`` of any error answer.
MAX_FIELD_CHARS = 200


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error the ingress answers (422 included)."""

    error: ErrorDetail


class ApiError(Exception):
    """An answer other than 2xx or 422, with a stable ``code`` for programs."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers
        self.field = field


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    field: str | None = None,
) -> JSONResponse:
    body = ErrorBody(
        error=ErrorDetail(
            code=code,
            message=excerpt(message, MAX_MESSAGE_CHARS),
            field=None if field is None else excerpt(field, MAX_FIELD_CHARS),
        )
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status_code, headers=headers
    )


def field_of(loc: Sequence[Any]) -> str:
    """``("body", "requests", 3, "size")`` → ``requests.3.size`` (``body`` is implied)."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def excerpt(text: str, limit: int = MAX_MESSAGE_EXCERPT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_problems(errors: Sequence[Any], *, prefix: Sequence[Any] = ()) -> tuple[str, str]:
    """``(field, message)`` for pydantic/FastAPI error dicts, without their ``input``."""
    if not errors:
        return field_of(prefix), "invalid request"
    lines = [
        f"{field_of([*prefix, *e.get('loc', ())])}: {excerpt(plain_message(e))}"
        for e in errors[:MAX_PROBLEMS]
    ]
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"and {len(errors) - MAX_PROBLEMS} more")
    return field_of([*prefix, *errors[0].get("loc", ())]), "; ".join(lines)


def plain_message(error: Any) -> str:
    """pydantic's message without its ``Value error, `` prefix (a person reads it)."""
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


#: What FastAPI raises (a plain 400) when the body is not text it can decode.
_UNPARSABLE_DETAIL = "There was an error parsing the body"


def _unreadable_body(request: Request, errors: Sequence[Any]) -> str | None:
    """Why the body could not be read as JSON at all (a 400, not a 422), else None."""
    for e in errors:
        if e.get("type") == "json_invalid":
            where = e.get("loc", ("body", "?"))[-1]
            why = (e.get("ctx") or {}).get("error", "JSON decode error")
            return f"the body is not valid JSON: {why} at character {where}"
    content_type = request.headers.get("content-type", "")
    sent = request.headers.get("content-length", "0") not in ("", "0")  # no body: a 422
    if (
        sent
        and "json" not in content_type.lower()
        and any(tuple(e.get("loc", ())) == ("body",) for e in errors)
    ):
        return (
            f"the body was not read as JSON (Content-Type {content_type or 'missing'!r}): "
            "send it with Content-Type: application/json"
        )
    return None


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 in the ingress's one error shape; a body that is not JSON is a 400."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    unreadable = _unreadable_body(request, errors)
    if unreadable is not None:
        return error_response(400, "invalid_json", unreadable)
    field, message = describe_problems(errors)
    return error_response(422, "invalid_request", message, field=field)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status_code,
        exc.code,
        exc.message,
        headers=exc.headers,
        field=exc.field,
    )


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Framework errors (unparsable body, unknown path, wrong method) in the same shape."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_DETAIL:
        # FastAPI's answer to a body it cannot decode (not UTF-8, for one).
        return error_response(
            400, "invalid_json", "the body is not UTF-8 JSON text", headers=headers
        )
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


def quoted(value: str, limit: int = 80) -> str:
    """``value`` for an error message: ``repr`` of a short excerpt (ids come from outside)."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}…({len(value)} chars)"


async def too_deep_handler(request: Request, exc: Exception) -> JSONResponse:
    """A body nested deeper than the JSON parser recurses, in any handler: 400."""
    return error_response(400, "invalid_json", "the body is nested too deeply to parse")


#: OpenAPI ``responses`` entries shared by the routes.
def documented(*codes: int) -> dict[int | str, dict[str, object]]:
    descriptions = {
        400: "the body could not be parsed",
        401: "missing or unknown bearer token",
        404: "no such resource for this producer",
        409: "conflict with the resource's state, or job_id_conflict: the id is used by "
        "a different request",
        413: "body larger than NBQ_MAX_BODY_BYTES",
        429: "daily credit budget would be exceeded",
        503: "a dependency is unavailable",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


def use_error_body_for_422(document: dict[str, Any]) -> dict[str, Any]:
    """Point every documented 422 at :class:`ErrorBody` (FastAPI documents its own shape)."""
    for path in document.get("paths", {}).values():
        for operation in path.values():
            answer = operation.get("responses", {}).get("422")
            if answer is not None:
                answer["description"] = "a field is invalid (`field` names it)"
                answer["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                }
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document
