"""The callback receiver: tokens, outcomes, deduplication; nothing changes the job record.

A valid callback for a generating job only sends ``nbq.poll`` (the poll re-fetches the
task); every other case answers without touching the job.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import redis

from nanobanana_queue.workers.callbacks import (
    callback_token,
    callback_url,
    reported_status_and_task,
    token_lifetime_s,
    token_round,
)
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.settings import ConfigError, load_settings
from tests.producers.ingress.conftest import SECRET, Ingress
from tests.support.records import seed


def _generating(ingress: Ingress, job_id: str = "gen-1", task_id: str = "task-1") -> JobRecord:
    return seed(
        ingress.store,
        JobRecord(
            job_id=job_id,
            state=JobState.GENERATING,
            producer="alice",
            evolink_task_id=task_id,
            poll_token="tok-now",
        ),
    )


def _post(ingress: Ingress, job_id: str, token: str | None, body: object) -> tuple[int, str]:
    query = f"?token={token}" if token is not None else ""
    response = ingress.client.post(
        f"/v1/callbacks/evolink/{job_id}{query}", content=json.dumps(body).encode()
    )
    return response.status_code, response.json().get("outcome", "")


def _polls_sent(ingress: Ingress) -> list[dict[str, object]]:
    broker = redis.Redis.from_url(ingress.settings.broker_url)
    messages = [json.loads(m) for m in broker.lrange("poll", 0, -1)]
    return [json.loads(base64.b64decode(m["body"]))[1] for m in messages]


def test_the_callback_url_carries_a_token_bound_to_the_job_its_round_and_an_expiry(
    ingress: Ingress,
) -> None:
    url = callback_url(ingress.settings, "job-9", 3)
    assert url is not None
    base, _, token = url.partition("?token=")
    assert base == "https://ingress.example.com/v1/callbacks/evolink/job-9"
    create_round, expires_at, _ = token.split(".")
    assert create_round == "3"
    lifetime = int(expires_at) - time.time()
    assert 0 < lifetime <= token_lifetime_s(ingress.settings)
    assert token_round(SECRET, "job-9", token) == 3
    assert token_round(SECRET, "job-8", token) is None  # another job's
    assert token_round("other-secret", "job-9", token) is None  # another secret's
    forged = token.replace("3.", "4.", 1)  # another round, same MAC
    assert token_round(SECRET, "job-9", forged) is None
    assert token_round(SECRET, "job-9", token, now=int(expires_at) + 1) is None  # expired
    assert token_round(SECRET, "job-9", callback_mac_only(SECRET, "job-9")) is None  # v1


def callback_mac_only(secret: str, job_id: str) -> str:
    """The token of earlier versions: an HMAC of the job id alone, never expiring."""
    return hmac.new(secret.encode(), job_id.encode(), hashlib.sha256).hexdigest()


def test_an_expired_token_is_rejected_like_a_wrong_one(ingress: Ingress) -> None:
    _generating(ingress)
    expired = callback_token(SECRET, "gen-1", 1, expires_at=int(time.time()) - 1)
    assert _post(ingress, "gen-1", expired, {"id": "task-1", "status": "completed"}) == (
        404,
        "rejected",
    )
    assert _polls_sent(ingress) == []


def test_no_callback_url_without_a_public_base() -> None:
    assert callback_url(load_settings(), "job-9") is None


@pytest.mark.parametrize(
    ("base", "ok"),
    [
        ("https://hooks.example.com", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://hooks.example.com", False),
        ("http://10.0.0.5", False),
        ("ftp://x", False),
    ],
)
def test_the_public_base_must_be_https_except_on_loopback(base: str, ok: bool) -> None:
    if ok:
        assert load_settings(public_callback_url=base, callback_secret="s").public_callback_url
    else:
        with pytest.raises(ConfigError, match="NBQ_PUBLIC_CALLBACK_URL"):
            load_settings(public_callback_url=base, callback_secret="s")


def test_a_public_base_without_a_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="NBQ_CALLBACK_SECRET"):
        load_settings(public_callback_url="https://hooks.example.com")


def test_a_valid_callback_for_a_generating_job_sends_one_poll_with_its_token(
    ingress: Ingress,
) -> None:
    _generating(ingress)
    status, outcome = _post(
        ingress, "gen-1", callback_token(SECRET, "gen-1"), {"id": "task-1", "status": "completed"}
    )
    assert (status, outcome) == (202, "poll_sent")
    assert _polls_sent(ingress) == [
        {"job_id": "gen-1", "token": "tok-now", "evolink_task_id": "task-1"}
    ]
    record = ingress.store.require("gen-1")
    assert record.state is JobState.GENERATING and record.poll_token == "tok-now"


def test_a_repeated_delivery_is_answered_but_sends_no_second_poll(ingress: Ingress) -> None:
    _generating(ingress)
    token = callback_token(SECRET, "gen-1")
    body = {"id": "task-1", "status": "completed"}
    assert _post(ingress, "gen-1", token, body) == (202, "poll_sent")
    assert _post(ingress, "gen-1", token, body) == (200, "duplicate")
    assert len(_polls_sent(ingress)) == 1


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "0" * 64,
        callback_token(SECRET, "gen-2"),
        callback_token("not-the-secret", "gen-1"),
    ],
    # Named, not shown: a token holds the time it was made, and pytest-xdist's test
    # processes must collect the same ids.
    ids=["missing", "empty", "zeros", "another-jobs-token", "wrong-secret"],
)
def test_a_wrong_token_answers_404_and_changes_nothing(ingress: Ingress, token: str | None) -> None:
    before = _generating(ingress)
    status, outcome = _post(ingress, "gen-1", token, {"id": "task-1", "status": "completed"})
    assert (status, outcome) == (404, "rejected")
    assert _polls_sent(ingress) == []
    assert ingress.store.get("gen-1") == before


def test_an_unknown_job_answers_like_a_wrong_token_unless_the_token_is_valid(
    ingress: Ingress,
) -> None:
    assert _post(ingress, "ghost", "f" * 64, {"status": "completed"}) == (404, "rejected")
    valid = callback_token(SECRET, "ghost")
    assert _post(ingress, "ghost", valid, {"status": "completed"}) == (200, "ignored")
    assert ingress.job_count() == 0 and _polls_sent(ingress) == []


def test_a_valid_callback_for_a_vanished_job_sends_a_rescue_poll_with_the_task_id(
    ingress: Ingress,
) -> None:
    valid = callback_token(SECRET, "vanished")
    body = {"id": "task-9", "status": "completed"}
    assert _post(ingress, "vanished", valid, body) == (202, "poll_sent")
    assert _post(ingress, "vanished", valid, body) == (200, "duplicate")
    assert _polls_sent(ingress) == [
        {"job_id": "vanished", "token": "", "evolink_task_id": "task-9"}
    ]
    assert ingress.job_count() == 0  # the worker re-records it, after re-fetching the task


@pytest.mark.parametrize(
    "state",
    [JobState.STORED, JobState.CANCELLED, JobState.FAILED, JobState.QUEUED, JobState.DOWNLOADING],
)
def test_a_job_that_is_not_generating_is_ignored(ingress: Ingress, state: JobState) -> None:
    seed(ingress.store, JobRecord(job_id="j", state=state, evolink_task_id="task-1"))
    assert _post(
        ingress, "j", callback_token(SECRET, "j"), {"id": "task-1", "status": "completed"}
    ) == (200, "ignored")
    assert ingress.store.require("j").state is state and _polls_sent(ingress) == []


def test_a_submitting_job_asks_the_vendor_to_deliver_again(ingress: Ingress) -> None:
    seed(ingress.store, JobRecord(job_id="j", state=JobState.SUBMITTING, attempts=1))
    assert _post(ingress, "j", callback_token(SECRET, "j"), {"status": "completed"}) == (
        409,
        "not_ready",
    )
    assert _polls_sent(ingress) == []


def test_a_callback_for_a_replaced_task_is_ignored(ingress: Ingress) -> None:
    _generating(ingress, task_id="task-new")
    assert _post(
        ingress, "gen-1", callback_token(SECRET, "gen-1"), {"id": "task-old", "status": "failed"}
    ) == (200, "ignored")
    assert _polls_sent(ingress) == []


def test_a_garbage_body_is_only_a_hint_to_poll(ingress: Ingress) -> None:
    _generating(ingress)
    response = ingress.client.post(
        f"/v1/callbacks/evolink/gen-1?token={callback_token(SECRET, 'gen-1')}",
        content=b"\x00not json",
    )
    assert response.status_code == 202 and len(_polls_sent(ingress)) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"status": "completed", "id": "t"}', ("completed", "t")),
        (b'{"status": "weird"}', ("other", None)),
        (b'{"status": 5, "id": 7}', ("other", None)),
        (b"[1]", ("unparsed", None)),
        (b"", ("unparsed", None)),
    ],
)
def test_the_body_is_read_only_for_its_status_and_task_id(
    body: bytes, expected: tuple[str, str | None]
) -> None:
    assert reported_status_and_task(body) == expected
