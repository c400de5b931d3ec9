"""Completion webhooks on real processes: a worker, the emulator, a loopback receiver.

Every delivery is verified with the ``standardwebhooks`` library, as a receiver would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
from standardwebhooks import Webhook

from nanobanana_queue.producers.errors import InvalidRequestError
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.notify.deadletter import NotifyDeadLetters
from tests.support.procs import wait_until
from tests.support.stack import Stack
from tests.support.webhook_receiver import Delivery, WebhookReceiver

pytestmark = [pytest.mark.integration]

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 fixed bytes
NOTIFY = {
    "NBQ_NOTIFY_SECRETS": f"shop:{SECRET}",
    "NBQ_NOTIFY_PRIVATE_HOSTS": "127.0.0.1",
    "NBQ_NOTIFY_ALLOW_HTTP": "true",
    "NBQ_NOTIFY_BACKOFF_BASE_S": "0.2",
    "NBQ_NOTIFY_BACKOFF_MAX_S": "1",
    "NBQ_NOTIFY_RETRY_PERIOD_S": "120",
}
QUEUES = "submit,poll,download,notify"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    the_receiver = WebhookReceiver()
    yield the_receiver
    the_receiver.stop()


def verified(delivery: Delivery) -> dict[str, object]:
    """The event as a receiver's library reads it (raises if the signature is wrong)."""
    return Webhook(SECRET).verify(delivery.body, delivery.headers)  # type: ignore[no-any-return]


def test_each_job_end_is_one_verified_event_whatever_the_outcome(
    stack: Stack, receiver: WebhookReceiver
) -> None:
    # Given a receiver, jobs that will be stored, fail (content policy) or be cancelled
    stack.overrides.update(NOTIFY)
    receiver.start()
    stack.emulator.add_fault(
        endpoint="create", action="fail_task", code="content_policy_violation", match="FORBIDDEN"
    )
    producer = stack.producer()
    prompts = ["a lighthouse"] * 20 + ["FORBIDDEN thing"] * 5 + ["to cancel"] * 5
    jobs = [
        producer.enqueue(
            {"prompt": p, "quality": "1K"},
            producer="shop",
            job_id=f"hook-{n}",
            notify_url=receiver.url,
        )
        for n, p in enumerate(prompts)
    ]
    for job in jobs[25:]:
        job.cancel()  # before any worker runs: cancelled while queued (told by this producer)
    # When a worker runs the rest
    stack.start_worker(queues=QUEUES)
    records = stack.wait_all(producer, [j.job_id for j in jobs])
    wait_until(
        lambda: len({d.headers["webhook-id"] for d in receiver.accepted()}) >= 30,
        timeout_s=60,
        what="30 webhooks",
    )
    # Then each job's end is exactly one verified event (duplicates only with the same id)
    events: dict[str, set[tuple[str, str]]] = {}
    for delivery in receiver.accepted():
        event = verified(delivery)
        key = event["data"]["job_id"]  # type: ignore[index]
        events.setdefault(key, set()).add((delivery.headers["webhook-id"], str(event["type"])))
    assert set(events) == set(records)
    want = {"stored": "job.stored", "failed": "job.failed", "cancelled": "job.cancelled"}
    for job_id, seen in events.items():
        assert seen == {(next(iter(seen))[0], want[records[job_id].state.value])}
    assert Counter(t for s in events.values() for _, t in s) == {
        "job.stored": 20,
        "job.failed": 5,
        "job.cancelled": 5,
    }
    # And the body is the job's public view: no secret, no signed link, no notify URL
    body = receiver.accepted()[0].body.decode()
    assert "test-key" not in body and SECRET not in body and "notify_url" not in body


def test_a_receiver_that_was_down_gets_every_event_once_it_is_back(
    stack: Stack, receiver: WebhookReceiver
) -> None:
    # Given no receiver listening yet
    stack.overrides.update(NOTIFY)
    producer = stack.producer()
    stack.start_worker(queues=QUEUES)
    jobs = [
        producer.enqueue(
            {"prompt": "x", "quality": "1K"},
            producer="shop",
            job_id=f"down-{n}",
            notify_url=receiver.url,
        )
        for n in range(3)
    ]
    stack.wait_all(producer, [j.job_id for j in jobs])
    wait_until(
        lambda: stack.worker_logs().count("notify_retry") >= 6,
        timeout_s=60,
        what="tries against the closed port",
    )
    # When it comes back
    receiver.start()
    # Then every job's event arrives, verified
    wait_until(lambda: len(receiver.accepted()) >= 3, timeout_s=60, what="the late deliveries")
    assert {verified(d)["data"]["job_id"] for d in receiver.accepted()} == {  # type: ignore[index]
        j.job_id for j in jobs
    }


def test_500_then_429_with_retry_after_is_retried_later_with_the_same_id(
    stack: Stack, receiver: WebhookReceiver
) -> None:
    # Given a receiver that answers 500, then 429 asking for 2 s, then accepts
    stack.overrides.update(NOTIFY)
    receiver.answers = [(500, {}), (429, {"Retry-After": "2"})]
    receiver.start()
    producer = stack.producer()
    stack.start_worker(queues=QUEUES)
    job = producer.enqueue(
        {"prompt": "x", "quality": "1K"}, producer="shop", job_id="slow", notify_url=receiver.url
    )
    wait_until(lambda: len(receiver.accepted()) == 1, timeout_s=60, what="the delivery")
    tries = receiver.deliveries
    # Then three tries of one webhook id, the last no sooner than the Retry-After
    assert [d.status for d in tries] == [500, 429, 204]
    assert len({d.headers["webhook-id"] for d in tries}) == 1
    assert tries[2].at - tries[1].at >= 1.9
    assert verified(tries[2])["data"]["job_id"] == job.job_id  # type: ignore[index]
    # And the delivery log shows the backoff honouring Retry-After
    waits = [float(w) for w in re.findall(r"retry_in_s=([0-9.]+)", stack.worker_logs())]
    assert len(waits) == 2 and waits[1] >= 2.0


@pytest.mark.parametrize(
    ("producer_name", "url", "why"),
    [
        ("shop", "http://169.254.169.254/latest", "link-local"),
        ("shop", "https://localhost/hook", "names this machine"),
        ("shop", "ftp://example.com/hook", "scheme"),
        ("nobody", "https://example.com/hook", "no webhook secret"),
    ],
)
def test_an_unsafe_or_unsigned_notify_url_is_refused_at_enqueue(
    stack: Stack, producer_name: str, url: str, why: str
) -> None:
    # Given webhooks configured for "shop" only, no private host opted in
    stack.overrides.update({**NOTIFY, "NBQ_NOTIFY_PRIVATE_HOSTS": ""})
    producer = stack.producer()
    with pytest.raises(InvalidRequestError, match=why) as refused:
        producer.enqueue({"prompt": "x"}, producer=producer_name, notify_url=url)
    # Then nothing was recorded
    assert refused.value.field == "notify_url"
    assert producer.runtime.store.count_in_state(JobState.QUEUED) == 0


def test_a_delivery_out_of_tries_is_dead_lettered_then_replayed_with_its_id(
    stack: Stack, receiver: WebhookReceiver
) -> None:
    # Given a short retry period and no receiver
    stack.overrides.update({**NOTIFY, "NBQ_NOTIFY_RETRY_PERIOD_S": "1"})
    producer = stack.producer()
    stack.start_worker(queues=QUEUES)
    job = producer.enqueue(
        {"prompt": "x", "quality": "1K"}, producer="shop", job_id="dead", notify_url=receiver.url
    )
    dead = NotifyDeadLetters(producer.runtime.redis, prefix=producer.settings.key_prefix)
    # When its tries run out, it is listed
    wait_until(lambda: len(dead.list()) == 1, timeout_s=60, what="the dead delivery")
    entry = dead.list()[0]
    assert entry["job_id"] == job.job_id and entry["event"] == "job.stored"
    # And a replay once the receiver is back delivers it, same webhook id
    receiver.start()
    replay = subprocess.run(
        [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "notify", "replay", "--all"],
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: len(receiver.accepted()) == 1, timeout_s=60, what="the replay")
    assert receiver.accepted()[0].headers["webhook-id"] == entry["webhook_id"]
    assert dead.list() == []
