"""The consumer's refusal path (workers/guard/consumer.py): stored, acked, counted, exported."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu.message import Message
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.deadletters import DeadLetterStore
from nanobanana_queue.workers.guard.consumer import DeadLetterer
from nanobanana_queue.workers.guard.inspect import Refusal
from nanobanana_queue.workers.metrics_exporter import build_registry
from nanobanana_queue.workers.settings import Settings, get_settings
from tests.support.redis_server import RedisServer


class AckSpy(Message):
    """A real kombu message that records its ack instead of talking to a channel."""

    acks = 0

    def ack(self, multiple: bool = False) -> None:
        self.acks += 1
        self._state = "ACK"


@pytest.fixture
def settings(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("NBQ_BROKER_URL", redis_server.url)
    monkeypatch.delenv("NBQ_REDIS_URL", raising=False)
    monkeypatch.setenv("NBQ_KEY_PREFIX", f"t{uuid.uuid4().hex[:8]}")
    get_settings.cache_clear()
    metrics.reset()
    metrics.set_enabled(True)
    yield get_settings()
    get_settings.cache_clear()
    metrics.reset()
    metrics.set_enabled(False)


def test_a_refused_message_is_stored_acked_counted_and_exported(settings: Settings) -> None:
    # Given a message off the submit queue that the guard refused
    message = AckSpy(
        body=b'"just a string"',
        headers={"task": "nbq.submit", "id": "m-1"},
        content_type="application/json",
        content_encoding="utf-8",
        delivery_info={"routing_key": "submit", "exchange": ""},
    )
    # When the consumer's dead-letterer takes it
    DeadLetterer("w9@test").refuse(message, Refusal("body_shape", "not a list"))
    # Then it is in the store with its queue, reason and worker, and acked once
    (letter,) = DeadLetterStore.from_settings(settings).list()
    assert (letter.queue, letter.reason, letter.hostname) == ("submit", "body_shape", "w9@test")
    assert letter.body == '"just a string"' and letter.message_id == "m-1"
    assert message.acks == 1
    # And the exporter shows nbq_dead_letters_total{queue, reason}
    text = generate_latest(build_registry(settings)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = ("nbq_dead_letters_total", (("queue", "submit"), ("reason", "body_shape")))
    assert samples[key] == 1


def test_without_an_event_loop_the_message_is_acked_even_when_the_store_is_down(
    settings: Settings,
) -> None:
    message = AckSpy(body=b"[1]", headers={"task": "nbq.submit", "id": "m-2"})
    letterer = DeadLetterer("w9@test")
    letterer._store = DeadLetterStore.from_settings(  # a store nobody listens on
        Settings(broker_url="redis://127.0.0.1:1/0")
    )
    letterer.refuse(message, Refusal("body_shape", "not a list"))
    assert message.acks == 1


def test_with_the_store_down_a_refusal_is_held_unacked_and_written_by_a_backed_off_retry(
    settings: Settings,
) -> None:
    # Given a dead-letterer on an event loop (recorded, run by hand) whose store is down
    message = AckSpy(body=b"[1]", headers={"task": "nbq.submit", "id": "m-3"})
    letterer = DeadLetterer("w9@test")
    later: list[tuple[float, Any]] = []
    letterer.scheduler = lambda delay, fn: later.append((delay, fn))
    holds: list[str] = []
    letterer.on_hold = lambda: holds.append("hold")
    letterer.on_release = lambda: holds.append("release")
    letterer._store = DeadLetterStore.from_settings(Settings(broker_url="redis://127.0.0.1:1/0"))
    # When it refuses a message: not acked, held (prefetch raised), a retry scheduled
    letterer.refuse(message, Refusal("body_shape", "not a list"))
    assert (message.acks, letterer.held, holds) == (0, 1, ["hold"])
    # And each failed retry backs off: 1 s, 2 s, 4 s ... capped at 30 s, one at a time
    for _ in range(7):
        later.pop()[1]()
    assert [delay for delay, _ in later] == [30.0] and message.acks == 0
    # Then with the store back, the next retry writes the letter and acks the message
    letterer._store = DeadLetterStore.from_settings(settings)
    later.pop()[1]()
    assert (message.acks, letterer.held, holds, later) == (1, 0, ["hold", "release"], [])
    (letter,) = DeadLetterStore.from_settings(settings).list()
    assert (letter.message_id, letter.reason) == ("m-3", "body_shape")


class _Hub:
    """Records what the consumer asks of the event loop (runs nothing by itself)."""

    def __init__(self) -> None:
        self.soon: list[Any] = []
        self.later: list[tuple[float, Any]] = []

    def call_soon(self, callback: Any) -> None:
        self.soon.append(callback)

    def call_later(self, delay: float, callback: Any) -> None:
        self.later.append((delay, callback))


class _Dispatcher:
    def __init__(self) -> None:
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def test_buffered_task_events_are_published_together_a_moment_later() -> None:
    from nanobanana_queue.workers.guard.consumer import EVENT_FLUSH_DELAY_S, GuardedConsumer

    consumer = GuardedConsumer.__new__(GuardedConsumer)
    consumer.hub, consumer.event_dispatcher = _Hub(), _Dispatcher()
    consumer._nbq_redis_events = True  # a Redis broker
    # Given three task events buffered in a row (from pool threads)
    for _ in range(3):
        consumer.on_send_event_buffered()
    # Then one flush is scheduled, from the hub's thread, EVENT_FLUSH_DELAY_S later
    assert len(consumer.hub.soon) == 1
    consumer.hub.soon.pop()()
    assert [delay for delay, _ in consumer.hub.later] == [EVENT_FLUSH_DELAY_S]
    consumer.hub.later.pop()[1]()
    assert consumer.event_dispatcher.flushes == 1
    # And the next event after the flush schedules the next one
    consumer.on_send_event_buffered()
    assert len(consumer.hub.soon) == 1


def test_a_flush_mark_whose_timer_was_lost_does_not_hold_events_back() -> None:
    from nanobanana_queue.workers.guard.consumer import GuardedConsumer

    consumer = GuardedConsumer.__new__(GuardedConsumer)
    consumer.hub, consumer.event_dispatcher = _Hub(), _Dispatcher()
    consumer._nbq_redis_events = True
    consumer.on_send_event_buffered()
    consumer.hub.soon.clear()  # a restarted consumer's hub dropped the timer
    consumer._nbq_flush_pending -= 2.0  # two seconds ago
    consumer.on_send_event_buffered()
    assert len(consumer.hub.soon) == 1


def test_on_rabbitmq_task_events_keep_celerys_own_flush() -> None:
    from nanobanana_queue.workers.guard.consumer import GuardedConsumer

    consumer = GuardedConsumer.__new__(GuardedConsumer)
    consumer.hub, consumer.event_dispatcher = _Hub(), _Dispatcher()
    consumer._nbq_redis_events = False
    consumer._flush_events_promise = "celery's flush"
    consumer.on_send_event_buffered()
    assert consumer.hub.soon == ["celery's flush"] and consumer.hub.later == []


def test_a_shutdown_publishes_the_buffered_events_before_celery_closes_the_dispatcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.worker.consumer import Consumer

    from nanobanana_queue.workers.guard.consumer import GuardedConsumer

    consumer = GuardedConsumer.__new__(GuardedConsumer)
    consumer.event_dispatcher = _Dispatcher()
    order: list[str] = []
    monkeypatch.setattr(
        Consumer,
        "shutdown",
        lambda self: order.append(f"closed after {self.event_dispatcher.flushes}"),
    )
    consumer.shutdown()
    assert order == ["closed after 1"]
