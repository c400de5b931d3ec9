"""Credit budgets refuse at enqueue, with a clear error naming the budget; nothing is
enqueued. Every accepted job holds its price, so a backlog cannot outrun the budget."""

from __future__ import annotations

import pytest

from nanobanana_queue.producers import CreditBudgetExceededError, Producer
from nanobanana_queue.workers.resilience.credits import CreditLedger
from nanobanana_queue.workers.settings import Settings
from tests.support.redis_server import RedisServer


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


def test_todays_charges_add_up_per_day_and_per_producer(redis_server: RedisServer) -> None:
    ledger = CreditLedger(redis_server.client())
    ledger.settle("a", 2.5, producer="shop", held_on=None)
    ledger.settle("b", 1.6, producer=None, held_on=None)
    assert ledger.spent_today() == 4.1  # exact: the book counts micro-credits
    assert ledger.spent_today(producer="shop") == 2.5
    assert ledger.today().reserved == 0.0


def test_a_request_over_the_daily_budget_is_refused_and_nothing_is_enqueued(
    redis_server: RedisServer,
) -> None:
    CreditLedger(redis_server.client()).settle("earlier", 9.0, producer=None, held_on=None)
    producer = _producer(redis_server, credit_limit_daily=10.0)
    with pytest.raises(CreditBudgetExceededError, match="NBQ_CREDIT_LIMIT_DAILY=10") as refused:
        producer.enqueue({"prompt": "over budget", "quality": "2K"})
    assert refused.value.budget == "NBQ_CREDIT_LIMIT_DAILY"
    assert "paid today 9" in str(refused.value)
    assert redis_server.client().keys("nbq:job:*") == []
    assert redis_server.client().llen("submit") == 0


def test_a_backlog_holds_its_price_so_the_budget_refuses_before_anything_is_paid(
    redis_server: RedisServer,
) -> None:
    # Given a budget of five 1K jobs and no worker at all
    producer = _producer(redis_server, credit_limit_daily_per_producer=8.0)
    accepted = [
        producer.enqueue({"prompt": f"p{n}", "quality": "1K"}, producer="a") for n in range(5)
    ]
    with pytest.raises(CreditBudgetExceededError) as refused:
        producer.enqueue({"prompt": "sixth", "quality": "1K"}, producer="a")
    assert refused.value.budget == "NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER"
    # Then five are queued, each holding 1.6, and the sixth was refused
    assert [h.status().credits_reserved for h in accepted] == [1.6] * 5
    figures = CreditLedger(redis_server.client()).today(producer="a")
    assert (figures.paid, figures.reserved) == (0.0, 8.0)
    # A cancelled job frees its hold: one more fits
    accepted[0].cancel()
    assert accepted[0].status().credits_reserved == 0.0
    producer.enqueue({"prompt": "again", "quality": "1K"}, producer="a")
    with pytest.raises(CreditBudgetExceededError):
        producer.enqueue({"prompt": "too many", "quality": "1K"}, producer="a")


def test_the_same_job_id_holds_once(redis_server: RedisServer) -> None:
    producer = _producer(redis_server, credit_limit_daily=5.0)
    for _ in range(3):
        producer.enqueue({"prompt": "p", "quality": "2K"}, job_id="same")
    assert CreditLedger(redis_server.client()).today().reserved == 2.5
    producer.enqueue({"prompt": "q", "quality": "2K"}, job_id="other")  # 5.0: just fits


def test_a_producer_over_its_own_budget_is_refused_while_others_go_on(
    redis_server: RedisServer,
) -> None:
    CreditLedger(redis_server.client()).settle("x", 4.0, producer="greedy", held_on=None)
    producer = _producer(redis_server, credit_limit_daily_per_producer=5.0)
    with pytest.raises(CreditBudgetExceededError, match="greedy"):
        producer.enqueue({"prompt": "x", "quality": "2K"}, producer="greedy")
    handle = producer.enqueue({"prompt": "x", "quality": "2K"}, producer="frugal")
    assert handle.status().state.value == "queued"


def test_the_day_keys_expire(redis_server: RedisServer) -> None:
    client = redis_server.client()
    ledger = CreditLedger(client, limit_daily=10.0)
    assert ledger.hold("j", 1.6, producer="shop").held
    keys = client.keys("nbq:credit-*")  # the book and the holds
    assert len(keys) == 2 and all(0 < client.ttl(k) <= 8 * 24 * 3600 for k in keys)


def test_a_settle_sent_after_another_command_runs_once_after_it_even_without_its_script(
    redis_server: RedisServer,
) -> None:
    """``settle_after``: the other command first, the settle once, its hold released; a
    server that lost the script (NOSCRIPT, nothing ran) gets the settle sent alone."""
    client = redis_server.client()
    ledger = CreditLedger(client, limit_daily=10.0)
    for job, before in (("a", "first"), ("b", "second")):
        assert ledger.hold(job, 1.6, producer="shop").held
        client.script_flush()  # (the hold loaded it): NOSCRIPT, the settle goes alone
        reply = ledger.settle_after(
            ["SET", f"k-{job}", before, "GET"], job, 1.6, producer="shop", held_on=None
        )
        assert reply is None and client.get(f"k-{job}") == before.encode()
    assert ledger.spent_today() == 3.2 and ledger.spent_today(producer="shop") == 3.2
    assert ledger.today().reserved == 0.0
    failed = ledger.settle_after(["INCR", "k-a"], "c", 1.0, producer=None, held_on=None)
    assert isinstance(failed, Exception)  # its own error, returned: the settle still ran
    assert ledger.spent_today() == 4.2
