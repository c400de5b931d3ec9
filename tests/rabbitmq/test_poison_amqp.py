"""Raw AMQP publishes cannot kill a worker on RabbitMQ either.

On AMQP there is no JSON envelope around a message: the broker frames it, py-amqp hands
kombu the body and properties as sent, and the consumer guard is the first to look at
them. The sending side is bare py-amqp (no kombu, no Celery): a body that is not JSON
under ``content_type=application/json``, with and without our task header, invalid
UTF-8, odd AMQP header field types, 2 MB. Then one real job: stored by the same worker.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from typing import Any

import amqp
import pytest

from nanobanana_queue.workers.deadletters import DeadLetterStore
from nanobanana_queue.workers.jobs.state import JobState
from tests.support.procs import wait_until
from tests.support.rabbitmq import Vhost
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

TASK = {"task": "nbq.poll", "id": "amqp-raw-1", "lang": "py"}

#: (body, application headers, content type, the dead letter's reason)
RAW: list[tuple[bytes, dict[str, Any] | None, str | None, str]] = [
    (b"not json", None, "application/json", "not_a_task"),
    (b"not json", TASK, "application/json", "undecodable"),
    (b"\xff\xfe\x00\x1b]0;PWNED\x07", TASK, "application/json", "undecodable"),
    (b"", TASK, "application/json", "undecodable"),
    (b"[" * 100_000, TASK, "application/json", "undecodable"),
    (b'{"properties": "x"}', TASK, "application/json", "body_shape"),
    (b"not json", TASK, None, "content_type"),
    (b"[[], {}, {}]", {**TASK, "id": dt.datetime(2020, 1, 1)}, "application/json", "bad_header"),
    (b"[[], {}, {}]", {**TASK, "retries": Decimal("1.5")}, "application/json", "bad_header"),
    (b"[[], {}, {}]", {**TASK, "task": {"nested": [1, 2]}}, "application/json", "unknown_task"),
    (b"x" * 2_000_000, TASK, "application/json", "oversized"),
]


def publish_raw(vhost: Vhost, queue: str) -> None:
    """Every RAW message onto ``queue`` through the default exchange, with py-amqp alone.

    With publisher confirms: each publish returns once the broker has the message. Without
    them, closing the connection right after the last publish lost the last message or
    three now and then (the 2 MB one most often, ≈ 1 run in 30: the broker never had
    them, the worker never saw them). Our own producers publish with confirms too
    (``confirm_publish``, workers/brokers.py).
    """
    conn = amqp.Connection(
        host=f"127.0.0.1:{vhost.port}",
        userid="guest",
        password="guest",
        virtual_host=vhost.name,
        confirm_publish=True,
    )
    conn.connect()
    try:
        channel = conn.channel()
        for body, headers, content_type in ((b, h, c) for b, h, c, _ in RAW):
            props: dict[str, Any] = {"application_headers": headers} if headers else {}
            if content_type:
                props["content_type"] = content_type
            channel.basic_publish(amqp.Message(body, **props), exchange="", routing_key=queue)
    finally:
        conn.close()


def test_raw_amqp_messages_are_dead_lettered_and_the_worker_carries_on(
    amqp_stack: Stack, vhost: Vhost
) -> None:
    # Given one worker on RabbitMQ (its queues declared by it)
    worker = amqp_stack.start_worker(concurrency=2)
    # When raw messages are published onto the poll queue, then a real job follows
    publish_raw(vhost, "poll")
    producer = amqp_stack.producer()
    job = producer.enqueue({"prompt": "behind raw amqp", "quality": "1K"}).job_id
    wait_until(
        lambda: worker.poll() is not None or producer.status(job).is_terminal,
        timeout_s=120,
        what="the job, or a dead worker",
    )
    # Then the same worker stored it
    assert worker.poll() is None, amqp_stack.worker_logs()[-3000:]
    assert producer.status(job).state == JobState.STORED
    # And each raw message is a dead letter with its reason
    store = DeadLetterStore.from_settings(amqp_stack.settings())
    try:
        wait_until(lambda: store.count() >= len(RAW), timeout_s=60, what="dead letters")
    except TimeoutError:  # say where the missing ones are: still queued, or never refused
        reasons = Counter(letter.reason for letter in store.list(limit=100))
        raise AssertionError(f"letters {reasons}, queued {vhost.queue_counts()}\n"
                             f"{amqp_stack.worker_logs()[-6000:]}") from None  # fmt: skip
    letters = store.list(limit=100)
    assert Counter(letter.reason for letter in letters) == Counter(r for *_, r in RAW)
    assert {letter.queue for letter in letters} == {"poll"}
    assert "Unrecoverable error" not in amqp_stack.worker_logs()
