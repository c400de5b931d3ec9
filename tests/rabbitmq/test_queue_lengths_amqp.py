"""Queue lengths on RabbitMQ (passive declares): the exporter's gauge and the reconciler's
backlog hold read the same numbers the broker reports."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.broker_queues import amqp_queue_lengths
from nanobanana_queue.workers.contract import ALL_QUEUES
from nanobanana_queue.workers.metrics_exporter import build_registry
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.reconcile import _waiting_messages
from tests.support.procs import wait_until
from tests.support.rabbitmq import Vhost
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


def test_waiting_messages_are_counted_per_queue_by_the_exporter_and_the_reconciler(
    amqp_stack: Stack, vhost: Vhost
) -> None:
    # Given three jobs enqueued on RabbitMQ and no worker yet
    producer = amqp_stack.producer()
    for i in range(3):
        producer.enqueue({"prompt": f"waiting {i}", "quality": "1K"})
    expected = {"submit": 3, "poll": 0, "download": 0}
    # Then the passive declares count them (an undeclared queue counts 0)
    wait_until(lambda: amqp_queue_lengths(vhost.url, ALL_QUEUES) == expected, timeout_s=10)
    # (rabbitmqctl agrees once its statistics, emitted every few seconds, catch up)
    wait_until(lambda: vhost.queue_counts().get("submit") == 3, timeout_s=30, interval_s=1)
    # And the exporter's nbq_queue_length shows them
    registry = build_registry(amqp_stack.settings())
    for queue, count in expected.items():
        assert registry.get_sample_value("nbq_queue_length", {"queue": queue}) == count
    assert registry.get_sample_value("nbq_metrics_redis_up") == 1.0
    # And the reconciler sees the backlog it must hold for
    assert _waiting_messages(Runtime.from_settings(amqp_stack.settings())) == expected


def test_an_unreachable_rabbitmq_leaves_the_reconciler_re_driving_as_usual(
    stack: Stack,
) -> None:
    stack.overrides["NBQ_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:1/none"
    stack.overrides["NBQ_REDIS_URL"] = stack.redis.url
    assert _waiting_messages(Runtime.from_settings(stack.settings())) == {}
    registry = build_registry(stack.settings())
    assert registry.get_sample_value("nbq_queue_length", {"queue": "submit"}) is None
    assert registry.get_sample_value("nbq_metrics_redis_up") == 1.0  # Redis is fine
