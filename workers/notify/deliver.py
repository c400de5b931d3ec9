"""One signed delivery try and what follows it: done, again later, or dead-lettered.

Signed per Standard Webhooks with the ``standardwebhooks`` package (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``: HMAC-SHA256 of ``id.timestamp.body``), so a
receiver verifies with that library, not with our code. A 2xx answer is delivered; 410
Gone stops (the receiver says the endpoint is no more); anything else (another status, a
timeout, a refused connection) is tried again after :func:`backoff_s`: exponential from
NBQ_NOTIFY_BACKOFF_BASE_S, at most NBQ_NOTIFY_BACKOFF_MAX_S, full jitter on the upper
half, and never sooner than the receiver's ``Retry-After``; until
NBQ_NOTIFY_RETRY_PERIOD_S after the first try. The wait is a countdown on the message,
never a sleep in a worker.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
from standardwebhooks import Webhook

from nanobanana_queue.workers.errors import UnsafeUrlError
from nanobanana_queue.workers.notify.urls import check_notify_url
from nanobanana_queue.workers.security.urlguard import UrlPolicy
from nanobanana_queue.workers.stages.steps import Notify

Outcome = Literal["delivered", "retry", "gone", "refused"]


@dataclass(frozen=True)
class Attempt:
    """What one try found: its outcome, the HTTP status and the receiver's Retry-After."""

    outcome: Outcome
    status: int | None = None
    retry_after_s: float | None = None
    detail: str = ""


def encode(payload: dict[str, object]) -> str:
    """The exact body that is signed and sent (the same bytes on every try)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def signed_headers(secret: str, webhook_id: str, data: str, now: datetime) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, now, data),
        "content-type": "application/json",
        "user-agent": "nanobanana-queue-webhooks",
    }


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent/unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def deliver_once(
    client: httpx.Client,
    policy: UrlPolicy,
    step: Notify,
    secret: str,
    *,
    timeout_s: float,
    now: datetime | None = None,
) -> Attempt:
    """POST the event once; never raises for the receiver's faults (they are outcomes)."""
    now = now or datetime.now(UTC)
    try:
        url = check_notify_url(step.url, policy)
    except UnsafeUrlError as exc:
        return Attempt("refused", detail=str(exc))
    data = encode(step.payload)
    try:
        response = client.post(
            url,
            content=data,
            headers=signed_headers(secret, step.webhook_id, data, now),
            timeout=timeout_s,
        )
    except UnsafeUrlError as exc:  # a name that resolves somewhere private
        return Attempt("refused", detail=str(exc))
    except httpx.HTTPError as exc:
        return Attempt("retry", detail=type(exc).__name__)
    status = response.status_code
    if 200 <= status < 300:
        return Attempt("delivered", status)
    if status == 410:
        return Attempt("gone", status, detail="410 Gone: the receiver retired this endpoint")
    return Attempt(
        "retry", status, retry_after_s(response.headers.get("retry-after"), now), f"HTTP {status}"
    )


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Wait before try ``attempt + 1``: ``base·2^attempt`` capped, jittered over its upper
    half (so receivers coming back are not hit by every sender at once), and at least the
    receiver's Retry-After (which may exceed ``max_s``: the receiver asked; the dispatcher
    still caps every countdown at NBQ_MAX_COUNTDOWN_S)."""
    ceiling = min(max_s, base_s * (2 ** min(attempt, 30)))
    wait = (rng or random).uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return wait
