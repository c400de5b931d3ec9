"""Hostile input gets the ingress's one error shape and a short answer (issue 25): deeply
nested JSON in any handler is a 4xx (it was a 500 in the callback receiver), and no
404/409/422 echoes more than a short excerpt of what was sent."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import structlog

from nanobanana_queue.producers.ingress.errors import MAX_MESSAGE_CHARS, error_response
from nanobanana_queue.workers.callbacks import callback_token
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.logs import configure_logging
from tests.producers.ingress.conftest import SECRET, Ingress, auth
from tests.support.records import seed

#: Deeper than Python's JSON parser can recurse.
NESTED = b"[" * 100_000 + b"]" * 100_000
HUGE_ID = "a" * 60_000
#: An answer that quotes a short excerpt of the input at most.
SHORT = 1_000


def assert_error_shape(response: object, *statuses: int) -> dict[str, str]:
    assert response.status_code in statuses, (response.status_code, response.text[:300])  # type: ignore[attr-defined]
    assert len(response.content) < SHORT  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert set(error) <= {"code", "message", "field"} and error["code"]
    return error  # type: ignore[no-any-return]


def test_deeply_nested_json_in_a_valid_callback_is_a_400(ingress: Ingress) -> None:
    # Given a generating job and a delivery with its valid token
    seed(
        ingress.store,
        JobRecord(
            job_id="gen-1",
            state=JobState.GENERATING,
            producer="alice",
            evolink_task_id="task-1",
            poll_token="tok",
        ),
    )
    url = f"/v1/callbacks/evolink/gen-1?token={callback_token(SECRET, 'gen-1')}"
    # When its body is nested deeper than any parser recurses
    response = ingress.client.post(url, content=NESTED)
    # Then the answer is the usual error shape, not a 500
    assert assert_error_shape(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batches"])
def test_deeply_nested_json_to_a_producer_route_is_a_4xx(ingress: Ingress, path: str) -> None:
    response = ingress.client.post(
        path, content=NESTED, headers={**auth(), "content-type": "application/json"}
    )
    assert_error_shape(response, 400, 422)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/{id}"),
        ("GET", "/v1/jobs/{id}/images"),
        ("DELETE", "/v1/jobs/{id}"),
        ("GET", "/v1/batches/{id}"),
    ],
)
def test_a_60000_character_id_gets_a_short_404(ingress: Ingress, method: str, path: str) -> None:
    response = ingress.client.request(method, path.format(id=HUGE_ID), headers=auth())
    error = assert_error_shape(response, 404)
    assert len(error["message"]) <= 120 and "…(60000 chars)" in error["message"]


def test_a_60000_character_id_in_a_callback_gets_a_short_answer(ingress: Ingress) -> None:
    response = ingress.client.post(f"/v1/callbacks/evolink/{HUGE_ID}?token=x", content=b"{}")
    assert response.status_code == 404 and len(response.content) < SHORT


def test_every_error_answer_cuts_its_message_and_field() -> None:
    # Whatever a handler puts in an ApiError (a 409 quoting an exception text, say)
    response = error_response(409, "not_cancellable", "x" * 100_000, field="f" * 100_000)
    error = json.loads(bytes(response.body))["error"]
    assert len(error["message"]) <= MAX_MESSAGE_CHARS and len(error["field"]) <= 200


def test_a_batch_with_a_huge_id_is_refused_shortly(ingress: Ingress) -> None:
    response = ingress.client.post(
        "/v1/batches",
        json={"batch_id": HUGE_ID, "requests": [{"prompt": "a"}]},
        headers=auth(),
    )
    assert_error_shape(response, 400, 409, 422)


@pytest.mark.parametrize("as_json", [False, True], ids=["console", "json"])
def test_an_escape_sequence_in_a_callback_path_reaches_the_log_escaped(
    ingress: Ingress, as_json: bool
) -> None:
    # Given the ingress logging as `nbq serve` does, to a captured stream
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            configure_logging("INFO", json=as_json)
        # When a delivery without a token names a "job" made of terminal escapes
        response = ingress.client.post(
            "/v1/callbacks/evolink/x%1b%5d0%3bPWNED%07%1b%5b2J%c2%9b31m", content=b"{}"
        )
    finally:
        structlog.reset_defaults()
    # Then it is rejected, and the log line shows the escapes as text
    assert response.status_code == 404
    logged = err.getvalue()
    assert "callback_rejected" in logged and "PWNED" in logged
    assert "\x1b" not in logged and "\x07" not in logged and "\x9b" not in logged
