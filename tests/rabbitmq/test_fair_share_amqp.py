"""Fair share on RabbitMQ (quorum queues, countdowns in the broker): the same property as
tests/integration/test_fair_share.py, read from the emulator's create log."""

from __future__ import annotations

import pytest

from tests.integration.test_fair_share import check_backlog_does_not_starve_another_producer
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


def test_a_backlog_does_not_starve_another_producer_on_rabbitmq(amqp_stack: Stack) -> None:
    check_backlog_does_not_starve_another_producer(amqp_stack)
