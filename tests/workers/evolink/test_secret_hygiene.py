"""The API key never leaks: not in repr/str, exception messages or args, pickles, or logs."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator

import httpx
import pytest
import structlog
from pydantic import SecretStr

from nanobanana_queue.workers.errors import EvolinkError, TransportError
from nanobanana_queue.workers.evolink.client import EvolinkClient
from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.logs import configure_logging, redact_text

API_KEY = "sk-hygiene-0123456789abcdef"
BASE_URL = "https://api.example.test"
REQUEST = GenerationRequest(prompt="a cat")
SIGNED_URL = "https://files.evolink.ai/r.png?X-Amz-Signature=cafebabe1234"

Handler = Callable[[httpx.Request], httpx.Response]

pytestmark = pytest.mark.usefixtures("no_metrics")


def call_api(client: EvolinkClient, call: str, task_id: str) -> None:
    """Make the call a test is parametrized with: ``create`` a task or ``query`` one."""
    if call == "create":
        client.create_task(REQUEST)
    else:
        client.get_task(task_id)


def echo_key(status: int) -> Handler:
    """A hostile server that quotes the caller's credentials back in its error message."""

    def respond(request: httpx.Request) -> httpx.Response:
        message = f"bad key {API_KEY}; header was {request.headers['Authorization']}; {SIGNED_URL}"
        body = {"error": {"code": "x", "message": message, "fallback_suggestion": message}}
        return httpx.Response(status, json=body, headers={"X-Echo": API_KEY})

    return respond


def raise_with_key(exc_type: type[httpx.TransportError]) -> Handler:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"failed talking with {request.headers['Authorization']}", request=request)

    return respond


def client_for(handler: Handler, key: str | SecretStr = API_KEY) -> EvolinkClient:
    return EvolinkClient(
        BASE_URL, key, http_client=httpx.Client(transport=httpx.MockTransport(handler))
    )


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def capture_logs(capsys: pytest.CaptureFixture[str], *, as_json: bool = False) -> Callable[[], str]:
    """Configure logging now (pytest swaps sys.stderr between setup and call phases)."""
    configure_logging("DEBUG", json=as_json)
    return lambda: capsys.readouterr().err


def failures() -> list[tuple[str, Handler]]:
    cases: list[tuple[str, Handler]] = [
        (f"status {status}", echo_key(status))
        for status in (400, 401, 402, 403, 404, 413, 429, 500, 502, 503)
    ]
    cases += [
        (exc.__name__, raise_with_key(exc))
        for exc in (
            httpx.ConnectTimeout,
            httpx.ReadTimeout,
            httpx.ConnectError,
            httpx.ReadError,
            httpx.RemoteProtocolError,
        )
    ]
    cases.append(("malformed", lambda _r: httpx.Response(200, content=f"oops {API_KEY}")))
    return cases


@pytest.mark.parametrize("key", [API_KEY, SecretStr(API_KEY)], ids=["str", "SecretStr"])
def test_repr_and_str_of_the_client_hide_the_key(key: str | SecretStr) -> None:
    with client_for(echo_key(400), key) as client:
        assert API_KEY not in repr(client)
        assert API_KEY not in str(client)
        assert "api.example.test" in repr(client)


@pytest.mark.parametrize(("name", "handler"), failures(), ids=[n for n, _ in failures()])
@pytest.mark.parametrize("call", ["create", "query"])
def test_no_exception_carries_the_key(name: str, handler: Handler, call: str) -> None:
    with client_for(handler) as client, pytest.raises(EvolinkError) as caught:
        call_api(client, call, "task-1")

    error = caught.value
    assert API_KEY not in str(error)
    assert API_KEY not in repr(error)
    assert all(API_KEY not in str(arg) for arg in error.args)
    assert API_KEY not in repr(vars(error))
    assert API_KEY.encode() not in pickle.dumps(error)
    assert "cafebabe" not in str(error)


@pytest.mark.parametrize(("name", "handler"), failures(), ids=[n for n, _ in failures()])
def test_no_log_line_carries_the_key(
    name: str, handler: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = capture_logs(capsys)
    with client_for(handler) as client:
        with pytest.raises(EvolinkError):
            client.create_task(REQUEST, idempotency_key="job-7")
        with pytest.raises(EvolinkError):
            client.get_task("task-9")

    output = logs()
    assert "evolink_call_failed" in output
    assert API_KEY not in output
    assert "cafebabe" not in output


def test_each_failed_call_logs_one_event_with_its_task_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs = capture_logs(capsys, as_json=True)
    with client_for(raise_with_key(httpx.ReadTimeout)) as client:
        with pytest.raises(TransportError):
            client.get_task("task-42")
        with pytest.raises(TransportError):
            client.create_task(REQUEST, idempotency_key="job-42")

    lines = [json.loads(line) for line in logs().splitlines() if line]

    assert [line["event"] for line in lines] == ["evolink_call_failed"] * 2
    query, create = lines
    assert query["evolink_task_id"] == "task-42"
    assert query["level"] == "warning"
    assert query["endpoint"] == "query"
    assert create["idempotency_key"] == "job-42"
    assert create["create_may_have_happened"] is True
    assert API_KEY not in json.dumps(lines)


def test_rate_limiting_is_logged_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    logs = capture_logs(capsys, as_json=True)
    with client_for(echo_key(429)) as client, pytest.raises(EvolinkError):
        client.get_task("task-1")

    line = json.loads(logs().strip())

    assert line["level"] == "info"
    assert line["status_code"] == 429


def test_successful_calls_log_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    logs = capture_logs(capsys)
    task = {"id": "task-1", "status": "completed", "results": [SIGNED_URL]}
    with client_for(lambda _r: httpx.Response(200, json=task)) as client:
        client.create_task(REQUEST)
        client.get_task("task-1")

    assert logs() == ""


def test_headers_repr_of_a_sent_request_masks_the_key() -> None:
    sent: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"id": "t"})

    with client_for(respond) as client:
        client.get_task("t")

    assert API_KEY not in repr(sent[0].headers)


def test_the_key_is_registered_for_redaction_on_construction() -> None:
    client_for(echo_key(400), "sk-registered-early-987").close()

    assert "sk-registered-early-987" not in redact_text("key=sk-registered-early-987")
