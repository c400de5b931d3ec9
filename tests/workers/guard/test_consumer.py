"""The consumer's refusal path (workers/guard/consumer.py): stored, acked, counted, exported."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kombu.message import Message
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.redis_server import RedisServer
from workers import metrics
from workers.deadletters import DeadLetterStore
from workers.guard.consumer import DeadLetterer
from workers.guard.inspect import Refusal
from workers.metrics_exporter import build_registry
from workers.settings import Settings, get_settings


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


def test_the_message_is_acked_even_when_the_store_is_down(settings: Settings) -> None:
    message = AckSpy(body=b"[1]", headers={"task": "nbq.submit", "id": "m-2"})
    letterer = DeadLetterer("w9@test")
    letterer._store = DeadLetterStore.from_settings(  # a store nobody listens on
        Settings(broker_url="redis://127.0.0.1:1/0")
    )
    letterer.refuse(message, Refusal("body_shape", "not a list"))
    assert message.acks == 1
