"""Credit budgets refuse at enqueue, with a clear error; nothing is enqueued."""

from __future__ import annotations

import pytest

from producers import CreditBudgetExceededError, Producer
from tests.support.redis_server import RedisServer
from workers.resilience.credits import CreditLedger
from workers.settings import Settings


def _producer(
    redis_server: RedisServer,
    *,
    credit_limit_daily: float = 0.0,
    credit_limit_daily_per_producer: float = 0.0,
) -> Producer:
    settings = Settings(
        broker_url=redis_server.url,
        credit_limit_daily=credit_limit_daily,
        credit_limit_daily_per_producer=credit_limit_daily_per_producer,
    )
    return Producer(settings)


def test_todays_spend_adds_up_per_day_and_per_producer(redis_server: RedisServer) -> None:
    ledger = CreditLedger(redis_server.client())
    ledger.record(2.5, producer="shop")
    ledger.record(1.6)
    assert ledger.spent_today() == pytest.approx(4.1)
    assert ledger.spent_today(producer="shop") == pytest.approx(2.5)


def test_a_request_over_the_daily_budget_is_refused_and_nothing_is_enqueued(
    redis_server: RedisServer,
) -> None:
    CreditLedger(redis_server.client()).record(9.0)
    producer = _producer(redis_server, credit_limit_daily=10.0)
    with pytest.raises(CreditBudgetExceededError, match="NBQ_CREDIT_LIMIT_DAILY=10"):
        producer.enqueue({"prompt": "over budget", "quality": "2K"})
    assert redis_server.client().keys("nbq:job:*") == []
    assert redis_server.client().llen("submit") == 0


def test_a_producer_over_its_own_budget_is_refused_while_others_go_on(
    redis_server: RedisServer,
) -> None:
    CreditLedger(redis_server.client()).record(4.0, producer="greedy")
    producer = _producer(redis_server, credit_limit_daily_per_producer=5.0)
    with pytest.raises(CreditBudgetExceededError, match="greedy"):
        producer.enqueue({"prompt": "x", "quality": "2K"}, producer="greedy")
    handle = producer.enqueue({"prompt": "x", "quality": "2K"}, producer="frugal")
    assert handle.status().state.value == "queued"


def test_a_day_key_gets_its_ttl_once_not_with_every_create(redis_server: RedisServer) -> None:
    client = redis_server.client()
    ledger = CreditLedger(client)
    ledger.record(1.6, producer="shop")
    keys = [k.decode() if isinstance(k, bytes) else k for k in client.keys("nbq:credits:*")]
    assert len(keys) == 2 and all(0 < client.ttl(k) <= 8 * 24 * 3600 for k in keys)
    client.persist(keys[0])  # a TTL this process believes set is not set again at once
    CreditLedger(client).record(1.6, producer="shop")  # (a stage builds one per call)
    assert client.ttl(keys[0]) == -1
    assert ledger.spent_today() == pytest.approx(3.2)
