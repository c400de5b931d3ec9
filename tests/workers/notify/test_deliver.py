"""One delivery try and its backoff, with httpx.MockTransport; signatures checked by the
``standardwebhooks`` library, as a receiver does."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks import Webhook

from nanobanana_queue.workers.notify.deliver import backoff_s, deliver_once, retry_after_s
from nanobanana_queue.workers.notify.urls import NotifyUrlPolicy
from nanobanana_queue.workers.stages.steps import Notify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STEP = Notify(
    "msg_1",
    "shop~a",
    "job.stored",
    "https://hooks.example.com/x",
    {"type": "job.stored", "data": {"job_id": "shop~a"}},
    first_at=0.0,
)
POLICY = NotifyUrlPolicy(allowed_hosts=())


def _client(
    status: int, headers: dict[str, str] | None = None
) -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers or {})

    return httpx.Client(transport=httpx.MockTransport(answer)), seen


def test_a_2xx_is_delivered_and_the_library_verifies_the_signature() -> None:
    client, seen = _client(204)
    assert deliver_once(client, POLICY, STEP, SECRET, timeout_s=1).outcome == "delivered"
    request = seen[0]
    event = Webhook(SECRET).verify(request.content, dict(request.headers))
    assert event["data"]["job_id"] == "shop~a" and request.headers["webhook-id"] == "msg_1"


def test_a_429_is_retried_with_its_retry_after_and_a_410_stops() -> None:
    client, _ = _client(429, {"Retry-After": "7"})
    tried = deliver_once(client, POLICY, STEP, SECRET, timeout_s=1)
    assert (tried.outcome, tried.status, tried.retry_after_s) == ("retry", 429, 7.0)
    client, _ = _client(410)
    assert deliver_once(client, POLICY, STEP, SECRET, timeout_s=1).outcome == "gone"


def test_an_unsafe_url_is_refused_without_a_request() -> None:
    client, seen = _client(204)
    step = Notify(**{**STEP.__dict__, "url": "https://10.0.0.1/x"})
    assert deliver_once(client, POLICY, step, SECRET, timeout_s=1).outcome == "refused"
    assert seen == []


def test_backoff_grows_is_capped_jittered_and_honours_retry_after() -> None:
    rng = random.Random(1)
    waits = [backoff_s(n, base_s=5, max_s=3600, rng=rng) for n in range(12)]
    assert all(5 * 2**n / 2 <= w <= 5 * 2**n for n, w in enumerate(waits[:9]))
    assert all(1800 <= w <= 3600 for w in waits[10:])
    assert backoff_s(0, base_s=5, max_s=60, retry_after=120, rng=rng) == 120


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("30", 30.0), ("Mon, 07 Dec 2026 18:00:10 GMT", 10.0), ("soon", None), (None, None)],
)
def test_retry_after_reads_seconds_or_an_http_date(
    header: str | None, seconds: float | None
) -> None:
    now = datetime(2026, 12, 7, 18, 0, 0, tzinfo=UTC)
    assert retry_after_s(header, now) == seconds
