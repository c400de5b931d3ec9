"""EvolinkClient against httpx.MockTransport: every status, body shape and transport failure."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from nanobanana_queue.workers.errors import (
    ApiConnectionError,
    ApiTimeoutError,
    EvolinkError,
    MalformedResponseError,
    ModelAccessDeniedError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    RequestRejectedError,
    RequestTooLargeError,
    ServerError,
    TaskFailedError,
    TransportError,
    UnauthorizedError,
)
from nanobanana_queue.workers.evolink.client import EvolinkClient, user_agent
from nanobanana_queue.workers.evolink.models import GenerationRequest, Quality, Size, TaskStatus
from nanobanana_queue.workers.evolink.retry_after import (
    parse_fallback_suggestion,
    parse_retry_after,
    suggestion_from_body,
)
from nanobanana_queue.workers.settings import ConfigError, load_settings
from tests.support.procs import free_port

pytestmark = pytest.mark.usefixtures("no_metrics")

BASE_URL = "https://api.example.test"
API_KEY = "sk-mock-secret-key-1234567890"
Handler = Callable[[httpx.Request], httpx.Response]

TASK_JSON: dict[str, Any] = {
    "created": 1757156493,
    "id": "task-unified-1757156493-imcg5zqt",
    "model": "nano-banana-2-beta",
    "object": "image.generation.task",
    "progress": 0,
    "status": "pending",
    "task_info": {"can_cancel": True, "estimated_time": 100},
    "type": "image",
    "usage": {"billing_rule": "per_call", "credits_reserved": 2.5, "user_group": "default"},
}


class Recorder:
    """A MockTransport handler that answers with ``respond`` and keeps every request."""

    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)


@pytest.fixture
def make_client() -> Iterator[Callable[[Handler], tuple[EvolinkClient, Recorder]]]:
    clients: list[EvolinkClient] = []

    def make(respond: Handler) -> tuple[EvolinkClient, Recorder]:
        recorder = Recorder(respond)
        http = httpx.Client(transport=httpx.MockTransport(recorder))
        client = EvolinkClient(BASE_URL, API_KEY, http_client=http)
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    def respond(_request: httpx.Request) -> httpx.Response:
        if isinstance(body, str | bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return respond


def error_body(code: Any, message: str | None = "something went wrong", **extra: Any) -> Any:
    error: dict[str, Any] = {"code": code, "type": "some_error"}
    if message is not None:
        error["message"] = message
    return {"error": error, **extra}


def raising(exc_type: type[httpx.TransportError]) -> Handler:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated failure", request=request)

    return respond


REQUEST = GenerationRequest(prompt="a cat on the grass", size=Size.R16_9, quality=Quality.Q1K)


def call_api(client: EvolinkClient, call: str, task_id: str) -> None:
    """Make the call a test is parametrized with: ``create`` a task or ``query`` one."""
    if call == "create":
        client.create_task(REQUEST)
    else:
        client.get_task(task_id)


# --- success ----------------------------------------------------------------------------


def test_create_sends_the_request_json_and_returns_the_task(make_client: Any) -> None:
    client, recorder = make_client(answer(200, TASK_JSON))

    task = client.create_task(REQUEST)

    assert task.id == TASK_JSON["id"]
    assert task.status is TaskStatus.PENDING
    assert task.estimated_time_s == 100
    sent = recorder.requests[0]
    assert sent.method == "POST"
    assert str(sent.url) == f"{BASE_URL}/v1/images/generations"
    assert json.loads(sent.content) == REQUEST.to_api_json()


def test_create_sends_authorization_user_agent_and_idempotency_key(make_client: Any) -> None:
    client, recorder = make_client(answer(200, TASK_JSON))

    client.create_task(REQUEST, idempotency_key="job-123")

    headers = recorder.requests[0].headers
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Idempotency-Key"] == "job-123"
    assert headers["User-Agent"] == user_agent()
    assert user_agent().startswith("nanobanana-queue/")


def test_create_without_idempotency_key_sends_no_such_header(make_client: Any) -> None:
    client, recorder = make_client(answer(200, TASK_JSON))

    client.create_task(REQUEST)

    assert "Idempotency-Key" not in recorder.requests[0].headers


def test_callback_url_argument_overrides_the_requests_own(make_client: Any) -> None:
    client, recorder = make_client(answer(200, TASK_JSON))
    request = REQUEST.model_copy(update={"callback_url": "https://old.example/cb"})

    client.create_task(request, callback_url="https://new.example/cb?token=abc")

    assert json.loads(recorder.requests[0].content)["callback_url"] == (
        "https://new.example/cb?token=abc"
    )


def test_get_task_queries_the_task_path_with_authorization(make_client: Any) -> None:
    client, recorder = make_client(answer(200, TASK_JSON))

    client.get_task("task-unified-1")

    sent = recorder.requests[0]
    assert sent.method == "GET"
    assert sent.url.path == "/v1/tasks/task-unified-1"
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"


def test_get_task_escapes_a_task_id_that_looks_like_a_path(make_client: Any) -> None:
    client, recorder = make_client(answer(200, TASK_JSON))

    client.get_task("../admin?x=1")

    assert recorder.requests[0].url.raw_path == b"/v1/tasks/..%2Fadmin%3Fx%3D1"


def test_get_task_refuses_an_empty_id(make_client: Any) -> None:
    client, _ = make_client(answer(200, TASK_JSON))

    with pytest.raises(ValueError, match="task_id"):
        client.get_task("")


def test_completed_task_results_list_gives_result_urls(make_client: Any) -> None:
    body = {
        **TASK_JSON,
        "status": "completed",
        "progress": 100,
        "results": ["https://files.evolink.ai/a.png?sig=1"],
    }
    client, _ = make_client(answer(200, body))

    task = client.get_task(TASK_JSON["id"])

    assert task.status is TaskStatus.COMPLETED
    assert task.result_urls == ["https://files.evolink.ai/a.png?sig=1"]


def test_completed_task_result_data_image_urls_give_result_urls(make_client: Any) -> None:
    body = {
        **TASK_JSON,
        "status": "completed",
        "result_data": [{"image_url": "https://files.evolink.ai/b.png"}, {"other": 1}],
    }
    client, _ = make_client(answer(200, body))

    task = client.get_task(TASK_JSON["id"])

    assert task.result_urls == ["https://files.evolink.ai/b.png"]


def test_failed_task_is_returned_not_raised(make_client: Any) -> None:
    body = {
        **TASK_JSON,
        "status": "failed",
        "error": {"code": "content_policy_violation", "message": "no"},
    }
    client, _ = make_client(answer(200, body))

    task = client.get_task(TASK_JSON["id"])

    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.code == "content_policy_violation"


def test_unknown_fields_in_the_task_are_tolerated(make_client: Any) -> None:
    body = {
        **TASK_JSON,
        "brand_new_field": {"x": 1},
        "task_info": {"estimated_time": 5, "queue_position": 3},
    }
    client, _ = make_client(answer(200, body))

    task = client.get_task(TASK_JSON["id"])

    assert task.id == TASK_JSON["id"]
    assert task.model_extra == {"brand_new_field": {"x": 1}}


# --- HTTP error statuses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid_request", RequestRejectedError),
        (401, "unauthorized", UnauthorizedError),
        (402, "insufficient_quota", QuotaExceededError),
        (403, "model_access_denied", ModelAccessDeniedError),
        (404, "not_found", NotFoundError),
        (413, "request_too_large", RequestTooLargeError),
        (429, "rate_limit_exceeded", RateLimitedError),
        (500, "internal_error", ServerError),
        (502, "upstream_error", ServerError),
        (503, "service_unavailable", ServerError),
        (418, "teapot", RequestRejectedError),
        (599, None, ServerError),
    ],
)
@pytest.mark.parametrize("call", ["create", "query"])
def test_error_status_maps_to_its_exception(
    make_client: Any, status: int, code: str | None, expected: type[EvolinkError], call: str
) -> None:
    client, _ = make_client(answer(status, error_body(code, "details here")))

    with pytest.raises(expected) as caught:
        call_api(client, call, "task-1")

    error = caught.value
    assert type(error) is expected
    assert error.status_code == status
    assert error.code == code
    assert "details here" in str(error)
    assert str(status) in str(error)


def test_retryable_flag_follows_the_status_class(make_client: Any) -> None:
    outcomes = {}
    for status in (400, 401, 402, 403, 404, 413, 429, 500, 502, 503):
        client, _ = make_client(answer(status, error_body("x")))
        with pytest.raises(EvolinkError) as caught:
            client.get_task("t")
        outcomes[status] = caught.value.retryable
    assert outcomes == {
        400: False,
        401: False,
        402: False,
        403: False,
        404: False,
        413: False,
        429: True,
        500: True,
        502: True,
        503: True,
    }


@pytest.mark.parametrize(
    "code",
    [
        "insufficient_quota",
        "insufficient_user_quota",
        "quota_not_enough",
        "account_balance_insufficient",
        "insufficient_token_quota",
        "key_quota_exhausted",
        "token_daily_quota_exceeded",
    ],
)
def test_402_keeps_the_precise_quota_code(make_client: Any, code: str) -> None:
    client, _ = make_client(answer(402, error_body(code)))

    with pytest.raises(QuotaExceededError) as caught:
        client.create_task(REQUEST)

    assert caught.value.code == code
    assert caught.value.is_daily_limit is (code == "token_daily_quota_exceeded")


def test_numeric_error_code_becomes_a_string(make_client: Any) -> None:
    client, _ = make_client(answer(429, error_body(429, "slow down")))

    with pytest.raises(RateLimitedError) as caught:
        client.get_task("t")

    assert caught.value.code == "429"


def test_error_without_message_still_raises_with_status(make_client: Any) -> None:
    client, _ = make_client(answer(403, error_body("model_access_denied", message=None)))

    with pytest.raises(ModelAccessDeniedError) as caught:
        client.create_task(REQUEST)

    assert "403" in str(caught.value)
    assert caught.value.code == "model_access_denied"


@pytest.mark.parametrize(
    "body",
    [
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        b"",
        b"\xff\xfe\x00garbage",
        "[1,2]",
        '{"error": "plain string error"}',
        '{"message": "top-level message"}',
        '{"error": null}',
    ],
)
def test_non_json_or_odd_error_body_still_maps_by_status(make_client: Any, body: Any) -> None:
    client, _ = make_client(answer(502, body, {"Content-Type": "text/html"}))

    with pytest.raises(ServerError) as caught:
        client.get_task("t")

    assert caught.value.status_code == 502
    assert caught.value.code is None
    assert "<html>" not in str(caught.value)


def test_long_error_message_is_truncated(make_client: Any) -> None:
    client, _ = make_client(answer(400, error_body("invalid_request", "x" * 10_000)))

    with pytest.raises(RequestRejectedError) as caught:
        client.create_task(REQUEST)

    assert len(str(caught.value)) < 400


def test_error_message_drops_signed_url_query_strings(make_client: Any) -> None:
    message = "cannot fetch https://files.evolink.ai/x.png?X-Amz-Signature=deadbeef"
    client, _ = make_client(answer(400, error_body("invalid_request", message)))

    with pytest.raises(RequestRejectedError) as caught:
        client.create_task(REQUEST)

    assert "deadbeef" not in str(caught.value)
    assert "https://files.evolink.ai/x.png" in str(caught.value)


# --- Retry-After ------------------------------------------------------------------------


def test_429_with_retry_after_seconds(make_client: Any) -> None:
    client, _ = make_client(answer(429, error_body("rate_limit_exceeded"), {"Retry-After": "7"}))

    with pytest.raises(RateLimitedError) as caught:
        client.create_task(REQUEST)

    assert caught.value.retry_after_s == 7.0


def test_429_with_fractional_retry_after(make_client: Any) -> None:
    client, _ = make_client(answer(429, error_body("x"), {"Retry-After": "1.5"}))

    with pytest.raises(RateLimitedError) as caught:
        client.get_task("t")

    assert caught.value.retry_after_s == 1.5


def test_429_with_retry_after_http_date(make_client: Any) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    header = format_datetime(when, usegmt=True)
    client, _ = make_client(answer(429, error_body("x"), {"Retry-After": header}))

    with pytest.raises(RateLimitedError) as caught:
        client.get_task("t")

    assert caught.value.retry_after_s is not None
    assert 100 <= caught.value.retry_after_s <= 121


def test_429_with_fallback_suggestion_at_top_level(make_client: Any) -> None:
    body = error_body("concurrency_limit", fallback_suggestion="retry after 60 seconds")
    client, _ = make_client(answer(429, body))

    with pytest.raises(RateLimitedError) as caught:
        client.create_task(REQUEST)

    assert caught.value.retry_after_s == 60.0


def test_503_with_fallback_suggestion_inside_error(make_client: Any) -> None:
    body = {
        "error": {
            "code": "service_unavailable",
            "message": "busy",
            "fallback_suggestion": "Retry after 30 seconds",
        }
    }
    client, _ = make_client(answer(503, body))

    with pytest.raises(ServerError) as caught:
        client.get_task("t")

    assert caught.value.retry_after_s == 30.0


def test_retry_after_header_wins_over_fallback_suggestion(make_client: Any) -> None:
    body = error_body("x", fallback_suggestion="retry after 60 seconds")
    client, _ = make_client(answer(429, body, {"Retry-After": "3"}))

    with pytest.raises(RateLimitedError) as caught:
        client.get_task("t")

    assert caught.value.retry_after_s == 3.0


def test_fallback_suggestion_ignored_on_other_statuses(make_client: Any) -> None:
    body = error_body("x", fallback_suggestion="retry after 60 seconds")
    client, _ = make_client(answer(500, body))

    with pytest.raises(ServerError) as caught:
        client.get_task("t")

    assert caught.value.retry_after_s is None


def test_429_without_any_hint_has_no_retry_after(make_client: Any) -> None:
    client, _ = make_client(answer(429, error_body("x"), {"Retry-After": "soon"}))

    with pytest.raises(RateLimitedError) as caught:
        client.get_task("t")

    assert caught.value.retry_after_s is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("42", 42.0),
        (" 2.5 ", 2.5),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("", None),
        (None, None),
        ("tomorrow", None),
        ("999999999", None),
    ],
)
def test_parse_retry_after_values(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_date_in_the_past_means_now() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)

    assert parse_retry_after("Tue, 01 Jan 2030 00:00:00 GMT", now=now + timedelta(hours=1)) == 0


def test_parse_retry_after_date_relative_to_now() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)

    assert parse_retry_after("Tue, 01 Jan 2030 00:01:30 GMT", now=now) == 90.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("retry after 60 seconds", 60.0),
        ("Retry after 30s", 30.0),
        ("please try again in 2 minutes", 120.0),
        ("wait 1.5 sec", 1.5),
        ("retry after 45", 45.0),
        ("no numbers here", None),
        (None, None),
        (60, None),
    ],
)
def test_parse_fallback_suggestion_values(text: object, expected: float | None) -> None:
    assert parse_fallback_suggestion(text) == expected


def test_suggestion_from_body_ignores_non_mappings() -> None:
    assert suggestion_from_body(["retry after 5 seconds"]) is None
    assert suggestion_from_body({"error": "retry after 5 seconds"}) is None


# --- malformed success bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        '{"id": ',
        "[]",
        "null",
        '{"status": "pending"}',
        '{"id": "t", "status": "exploded"}',
        '{"id": "t", "progress": "lots"}',
    ],
)
@pytest.mark.parametrize("call", ["create", "query"])
def test_200_with_a_body_that_is_not_a_task_is_malformed(
    make_client: Any, body: str, call: str
) -> None:
    client, _ = make_client(answer(200, body))

    with pytest.raises(MalformedResponseError) as caught:
        call_api(client, call, "t")

    assert caught.value.status_code == 200
    assert caught.value.retryable is True
    assert isinstance(caught.value.__cause__, Exception)


# --- transport failures -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc_type", "expected", "may_have_happened"),
    [
        (httpx.ConnectTimeout, ApiTimeoutError, False),
        (httpx.PoolTimeout, ApiTimeoutError, False),
        (httpx.ReadTimeout, ApiTimeoutError, True),
        (httpx.WriteTimeout, ApiTimeoutError, True),
        (httpx.ConnectError, ApiConnectionError, False),
        (httpx.ReadError, ApiConnectionError, True),
        (httpx.WriteError, ApiConnectionError, True),
        (httpx.RemoteProtocolError, ApiConnectionError, True),
    ],
)
def test_create_transport_failure_says_whether_the_task_may_exist(
    make_client: Any,
    exc_type: type[httpx.TransportError],
    expected: type[TransportError],
    may_have_happened: bool,
) -> None:
    client, _ = make_client(raising(exc_type))

    with pytest.raises(expected) as caught:
        client.create_task(REQUEST)

    assert type(caught.value) is expected
    assert caught.value.create_may_have_happened is may_have_happened
    assert caught.value.retryable is True
    assert isinstance(caught.value.__cause__, exc_type)


@pytest.mark.parametrize(
    ("exc_type", "expected"),
    [
        (httpx.ConnectTimeout, ApiTimeoutError),
        (httpx.ReadTimeout, ApiTimeoutError),
        (httpx.ConnectError, ApiConnectionError),
        (httpx.RemoteProtocolError, ApiConnectionError),
    ],
)
def test_query_transport_failure_never_claims_a_create(
    make_client: Any, exc_type: type[httpx.TransportError], expected: type[TransportError]
) -> None:
    client, _ = make_client(raising(exc_type))

    with pytest.raises(expected) as caught:
        client.get_task("t")

    assert caught.value.create_may_have_happened is False


def test_real_connection_refused_is_a_connection_error_not_sent() -> None:
    client = EvolinkClient(f"http://127.0.0.1:{free_port()}", API_KEY, connect_timeout_s=2)

    with client, pytest.raises(ApiConnectionError) as caught:
        client.create_task(REQUEST)

    assert caught.value.create_may_have_happened is False


# --- metrics ----------------------------------------------------------------------------


def test_every_call_reports_one_metric(
    make_client: Any, no_metrics: list[tuple[str, int | str, str]]
) -> None:
    ok, _ = make_client(answer(200, TASK_JSON))
    quota, _ = make_client(answer(402, error_body("token_daily_quota_exceeded")))
    timeout, _ = make_client(raising(httpx.ReadTimeout))
    refused, _ = make_client(raising(httpx.ConnectError))

    ok.create_task(REQUEST)
    ok.get_task("t")
    with pytest.raises(QuotaExceededError):
        quota.create_task(REQUEST)
    with pytest.raises(ApiTimeoutError):
        timeout.get_task("t")
    with pytest.raises(ApiConnectionError):
        refused.create_task(REQUEST)

    assert no_metrics == [
        ("create", 200, ""),
        ("query", 200, ""),
        ("create", 402, "token_daily_quota_exceeded"),
        ("query", "timeout", "timeout"),
        ("create", "connection_error", "connection_error"),
    ]


# --- pickling (Celery moves exceptions between processes) -------------------------------


@pytest.mark.parametrize(
    "error",
    [
        QuotaExceededError("create: HTTP 402", status_code=402, code="token_daily_quota_exceeded"),
        RateLimitedError("query: HTTP 429", status_code=429, code="429", retry_after_s=60.0),
        ServerError("query: HTTP 503", status_code=503, retry_after_s=30.0),
        MalformedResponseError("create: bad body", status_code=200, code="malformed_response"),
        ApiTimeoutError("create: ReadTimeout", create_may_have_happened=True),
        ApiConnectionError("create: ConnectError", create_may_have_happened=False),
        TaskFailedError("generation_timeout", "took too long"),
    ],
)
def test_exceptions_survive_a_pickle_round_trip(error: EvolinkError) -> None:
    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)


def test_raised_client_errors_pickle_with_their_fields(make_client: Any) -> None:
    client, _ = make_client(answer(429, error_body(429), {"Retry-After": "5"}))
    with pytest.raises(RateLimitedError) as caught:
        client.create_task(REQUEST)

    copy = pickle.loads(pickle.dumps(caught.value))

    assert (copy.status_code, copy.code, copy.retry_after_s) == (429, "429", 5.0)


# --- construction -------------------------------------------------------------------------


def test_from_settings_without_a_key_is_a_config_error() -> None:
    settings = load_settings(evolink_api_key=None, _env_file=None)

    with pytest.raises(ConfigError, match="NBQ_EVOLINK_API_KEY"):
        EvolinkClient.from_settings(settings)


def test_from_settings_uses_base_url_and_timeouts() -> None:
    settings = load_settings(
        evolink_api_key="sk-from-settings",
        evolink_base_url="http://127.0.0.1:1/",
        http_connect_timeout_s=1.5,
        http_read_timeout_s=9.0,
    )

    with EvolinkClient.from_settings(settings) as client:
        assert client.base_url == "http://127.0.0.1:1"
        timeout = client._http.timeout
        assert (timeout.connect, timeout.read) == (1.5, 9.0)


def test_close_leaves_an_injected_http_client_open() -> None:
    http = httpx.Client(transport=httpx.MockTransport(answer(200, TASK_JSON)))
    with EvolinkClient(BASE_URL, API_KEY, http_client=http) as client:
        client.get_task("t")

    assert not http.is_closed
    http.close()


def test_close_closes_the_clients_own_pool() -> None:
    client = EvolinkClient(BASE_URL, API_KEY)
    client.close()

    assert client._http.is_closed
