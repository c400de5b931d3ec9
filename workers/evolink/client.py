"""Typed HTTP client for the Evolink image API: one attempt per call, errors translated.

The client owns no policy: it never retries, sleeps or downloads results. It sends one
request, and turns whatever comes back (a task, an error body, a timeout, a dropped
connection) into either a :class:`~workers.evolink.models.Task` or one exception from
:mod:`workers.errors`. httpx exceptions stop here (``raise ... from exc``); the
Celery stages above decide whether and when to try again.

Example::

    with EvolinkClient.from_settings(get_settings()) as client:
        task = client.create_task(GenerationRequest(prompt="a cat"), idempotency_key=job_id)
        task = client.get_task(task.id)

Secrets: the API key is registered with the log redactor on construction and appears in
no ``repr``, message or log event; server messages are redacted before they are quoted.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr, ValidationError

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.errors import (
    ApiConnectionError,
    ApiTimeoutError,
    EvolinkError,
    MalformedResponseError,
    RateLimitedError,
    TransportError,
    error_for_status,
)
from nanobanana_queue.workers.evolink.models import GenerationRequest, Task
from nanobanana_queue.workers.evolink.retry_after import parse_retry_after, suggestion_from_body
from nanobanana_queue.workers.logs import get_logger, redact_text, register_secret
from nanobanana_queue.workers.settings import Settings

__all__ = ["CREATE_PATH", "TASK_PATH", "EvolinkClient", "user_agent"]

CREATE_PATH: Final = "/v1/images/generations"
TASK_PATH: Final = "/v1/tasks/{task_id}"
#: Connections kept per client; one client serves every thread of a worker process.
MAX_CONNECTIONS: Final = 50
#: Longest server message quoted in an exception (error pages can be huge).
MAX_MESSAGE_CHARS: Final = 300
#: Statuses whose body may carry a ``fallback_suggestion`` wait.
SUGGESTION_STATUSES: Final = frozenset({429, 503})
#: The project's emulator sends its exact time-scaled estimate here (the body's
#: ``estimated_time`` is whole seconds, as the spec types it). The vendor never sends it.
EMULATOR_ESTIMATE_HEADER: Final = "X-Emulator-Estimated-Time"

Endpoint = Literal["create", "query"]

_log = get_logger(__name__)


def user_agent() -> str:
    """``nanobanana-queue/<version>``; ``0`` when running from an uninstalled tree."""
    try:
        version = importlib.metadata.version("nanobanana-queue")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return f"nanobanana-queue/{version}"


class EvolinkClient:
    """Connection-pooled client; thread-safe (httpx.Client is), close it when done."""

    def __init__(
        self,
        base_url: str,
        api_key: str | SecretStr,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        register_secret(key)
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {key}",
            "User-Agent": user_agent(),
            "Accept": "application/json",
        }
        self._owns_http = http_client is None
        # An injected client keeps its own timeouts and limits (tests, custom transports).
        self._http = http_client or httpx.Client(
            timeout=httpx.Timeout(
                connect=connect_timeout_s,
                read=read_timeout_s,
                write=read_timeout_s,
                pool=connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> EvolinkClient:
        """Build from ``NBQ_*`` settings; raises ConfigError when the API key is unset."""
        return cls(
            settings.evolink_base_url,
            settings.api_key(),
            connect_timeout_s=settings.http_connect_timeout_s,
            read_timeout_s=settings.http_read_timeout_s,
        )

    def __repr__(self) -> str:
        return f"EvolinkClient(base_url={self.base_url!r})"

    __str__ = __repr__

    # --- API calls --------------------------------------------------------------------

    def create_task(
        self,
        request: GenerationRequest | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> Task:
        """Submit one generation (paid). Never retried here: a timeout after sending
        raises a TransportError with ``create_may_have_happened=True``.

        ``callback_url`` overrides the request's own; ``idempotency_key`` is sent as the
        ``Idempotency-Key`` header (a hint: the API does not promise to honour it).
        """
        # A mapping is a request's API JSON as validated at intake (the job record's):
        # sent as is, never validated again.
        body = request.to_api_json() if isinstance(request, GenerationRequest) else dict(request)
        if callback_url is not None:
            body["callback_url"] = callback_url
        headers = self._headers
        if idempotency_key is not None:
            headers = {**headers, "Idempotency-Key": idempotency_key}
        context = {"idempotency_key": idempotency_key} if idempotency_key else {}
        return self._call("create", "POST", self.base_url + CREATE_PATH, headers, body, context)

    def get_task(self, task_id: str) -> Task:
        """Current state of a task (free); 404 for an unknown id raises NotFoundError."""
        if not task_id:
            raise ValueError("task_id must not be empty")
        url = self.base_url + TASK_PATH.format(task_id=quote(task_id, safe=""))
        return self._call("query", "GET", url, self._headers, None, {"evolink_task_id": task_id})

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the pool (only if this client created it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> EvolinkClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the boundary -----------------------------------------------------------------

    def _call(
        self,
        endpoint: Endpoint,
        method: str,
        url: str,
        headers: dict[str, str],
        body: dict[str, Any] | None,
        context: dict[str, Any],
    ) -> Task:
        """One request; every outcome other than a valid task becomes an EvolinkError."""
        try:
            response = self._http.request(method, url, headers=headers, json=body)
        except httpx.TransportError as exc:
            lost = _transport_error(endpoint, exc)
            metrics.api_call(endpoint, _transport_status(lost), lost.reason)
            _log_failure(endpoint, lost, context)
            raise lost from exc
        if response.is_success:
            try:
                task = Task.model_validate_json(response.content)
            except ValidationError as exc:
                malformed = MalformedResponseError(
                    f"{endpoint}: HTTP {response.status_code} body is not a task "
                    f"({exc.error_count()} validation error(s))",
                    status_code=response.status_code,
                    code="malformed_response",
                )
                metrics.api_call(endpoint, response.status_code, malformed.reason)
                _log_failure(endpoint, malformed, context)
                raise malformed from exc
            metrics.api_call(endpoint, response.status_code, "")
            return _with_exact_estimate(task, response.headers.get(EMULATOR_ESTIMATE_HEADER))
        error = _status_error(endpoint, response)
        metrics.api_call(endpoint, response.status_code, error.code or error.reason)
        _log_failure(endpoint, error, context)
        raise error


def _with_exact_estimate(task: Task, header: str | None) -> Task:
    """Refine the integer ``estimated_time`` by the emulator's exact one, when consistent.

    Only a value within the integer's last second counts (``ceil(exact) == integer``):
    the refinement can never move a poll by more than a second, and an answer without the
    header (the real API) keeps its integer unchanged.
    """
    whole = task.task_info.estimated_time
    if header is None or whole is None:
        return task
    try:
        exact = float(header)
    except ValueError:
        return task
    if not (0 < exact <= whole < exact + 1):
        return task
    info = task.task_info.model_copy(update={"estimated_time": exact})
    return task.model_copy(update={"task_info": info})


def _transport_error(endpoint: Endpoint, exc: httpx.TransportError) -> TransportError:
    """Timeout vs connection error; for a create, whether the request may have left us."""
    # Connect-phase failures (and waiting for a pooled connection) happen before any byte
    # of the request is written; everything else may have reached the server.
    not_sent = isinstance(
        exc,
        httpx.ConnectTimeout | httpx.ConnectError | httpx.PoolTimeout | httpx.UnsupportedProtocol,
    )
    may_have_happened = endpoint == "create" and not not_sent
    detail = redact_text(str(exc))[:MAX_MESSAGE_CHARS] or "no detail"
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ApiTimeoutError(
            f"{endpoint}: {kind}: {detail}", create_may_have_happened=may_have_happened
        )
    return ApiConnectionError(
        f"{endpoint}: {kind}: {detail}", create_may_have_happened=may_have_happened
    )


def _transport_status(error: TransportError) -> str:
    return "timeout" if isinstance(error, ApiTimeoutError) else "connection_error"


def _status_error(endpoint: Endpoint, response: httpx.Response) -> EvolinkError:
    """Map an HTTP error answer to its exception, keeping the API's precise ``code``."""
    status = response.status_code
    body: object = None
    try:
        body = response.json()
    except ValueError:  # HTML error page, empty body, bad encoding
        body = None
    code, message = _error_fields(body)
    retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
    if retry_after_s is None and status in SUGGESTION_STATUSES:
        retry_after_s = suggestion_from_body(body)
    if not message:
        message = "error body is not JSON" if body is None else "no message"
    text = f"{endpoint}: HTTP {status}" + (f" {code}" if code else "") + f": {message}"
    return error_for_status(status)(
        redact_text(text)[: MAX_MESSAGE_CHARS + 40],
        status_code=status,
        code=code,
        retry_after_s=retry_after_s,
    )


def _error_fields(body: object) -> tuple[str | None, str]:
    """``(code, message)`` from ``{"error": {"code", "message"}}``; code as a string."""
    if not isinstance(body, dict):
        return None, ""
    error = body.get("error")
    if isinstance(error, str):
        return None, error[:MAX_MESSAGE_CHARS]
    if not isinstance(error, dict):
        message = body.get("message")
        return None, message[:MAX_MESSAGE_CHARS] if isinstance(message, str) else ""
    raw_code = error.get("code")
    code = None if raw_code is None or isinstance(raw_code, dict | list) else str(raw_code)
    message = error.get("message")
    return code, message[:MAX_MESSAGE_CHARS] if isinstance(message, str) else ""


def _log_failure(endpoint: Endpoint, error: EvolinkError, context: dict[str, Any]) -> None:
    """One event per failed call: INFO for rate limiting (expected), WARNING otherwise."""
    fields: dict[str, Any] = {
        "endpoint": endpoint,
        "reason": error.reason,
        "status_code": error.status_code,
        "code": error.code,
        "retry_after_s": error.retry_after_s,
        "error": error.message,
        **context,
    }
    if isinstance(error, TransportError):
        fields["create_may_have_happened"] = error.create_may_have_happened
    if isinstance(error, RateLimitedError):
        _log.info("evolink_call_failed", **fields)
    else:
        _log.warning("evolink_call_failed", **fields)
