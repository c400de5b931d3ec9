"""The day's credit book (credits.lua) on a real Redis: hold, settle, release, ended —
atomic, idempotent per job, exact to the micro-credit."""

from __future__ import annotations

from nanobanana_queue.workers.resilience.credits import CreditLedger
from tests.support.redis_server import RedisServer


def test_a_hold_is_refused_when_paid_plus_reserved_would_pass_the_limit(
    redis_server: RedisServer,
) -> None:
    ledger = CreditLedger(redis_server.client(), limit_daily=5.0)
    assert ledger.hold("a", 2.5, producer=None).held
    assert ledger.hold("b", 2.5, producer=None).held
    refused = ledger.hold("c", 0.1, producer=None)
    assert not refused.held and refused.budget == "total"
    assert (refused.paid, refused.reserved) == (0.0, 5.0)
    assert ledger.holds_today() == {"a": 2.5, "b": 2.5}


def test_settling_replaces_the_hold_by_the_real_charge(redis_server: RedisServer) -> None:
    ledger = CreditLedger(redis_server.client(), limit_daily=5.0)
    held = ledger.hold("a", 2.5, producer="p")
    ledger.settle("a", 1.6, producer="p", held_on=held.day)
    ledger.settle("gone", 1.6, producer="p", held_on=None)  # a job that held nothing
    day = ledger.today(producer="p")
    assert (day.paid, day.reserved) == (3.2, 0.0)
    assert ledger.hold("b", 1.8, producer="p").held  # 3.2 + 1.8 = 5.0
    assert not ledger.hold("c", 0.000001, producer="p").held


def test_a_lowered_limit_refuses_a_job_that_already_holds_and_frees_its_hold(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    assert CreditLedger(client, limit_daily=10.0).hold("a", 5.0, producer=None).held
    assert CreditLedger(client, limit_daily=10.0).hold("b", 5.0, producer=None).held
    lowered = CreditLedger(client, limit_daily=6.0)
    assert not lowered.hold("a", 5.0, producer=None).held  # checked again at submit
    assert lowered.hold("b", 5.0, producer=None).held  # 5.0 reserved now fits
    assert lowered.holds_today() == {"b": 5.0}


def test_ended_frees_the_hold_and_counts_what_the_job_paid_once_a_day(
    redis_server: RedisServer,
) -> None:
    ledger = CreditLedger(redis_server.client(), limit_daily=100.0)
    held = ledger.hold("j", 1.6, producer="p")
    ledger.settle("j", 1.6, producer="p", held_on=held.day)
    ledger.ended("j", "failed", paid=1.6, producer="p", held_on=held.day)
    # retried: holds again, pays again, fails again — only the new 1.6 is added
    held = ledger.hold("j", 1.6, producer="p")
    ledger.settle("j", 1.6, producer="p", held_on=held.day)
    ledger.ended("j", "failed", paid=3.2, producer="p", held_on=held.day)
    ledger.ended("j", "failed", paid=3.2, producer="p", held_on=held.day)  # a duplicate
    held = ledger.hold("k", 2.5, producer=None)
    ledger.ended("k", "cancelled", paid=0.0, producer=None, held_on=held.day)
    day = ledger.today()
    assert (day.paid, day.reserved, day.failed, day.cancelled) == (3.2, 0.0, 3.2, 0.0)


def test_producers_are_listed_with_their_own_figures(redis_server: RedisServer) -> None:
    ledger = CreditLedger(redis_server.client(), limit_daily_per_producer=4.0)
    ledger.hold("a1", 2.5, producer="alice")
    ledger.settle("b1", 1.6, producer="bob", held_on=None)
    listed = ledger.producers_today()
    assert (listed["alice"].paid, listed["alice"].reserved) == (0.0, 2.5)
    assert (listed["bob"].paid, listed["bob"].reserved) == (1.6, 0.0)
    assert not ledger.hold("a2", 2.5, producer="alice").held  # alice's own budget
    assert ledger.hold("b2", 2.4, producer="bob").held  # bob's is apart


def test_spend_written_by_workers_before_the_book_counts_as_paid(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    ledger = CreditLedger(client, limit_daily=5.0)
    client.incrbyfloat(ledger._keys("2000-01-01", None)[2].replace("2000-01-01", _today()), 4.0)
    assert ledger.spent_today() == 4.0
    assert not ledger.hold("a", 1.6, producer=None).held


def _today() -> str:
    from nanobanana_queue.workers.resilience.credits import day_of

    return day_of()


def test_a_hold_is_released_by_its_settle_even_after_the_budget_was_removed(
    redis_server: RedisServer,
) -> None:
    # Given a job that held its price under a budget, and the budget removed since
    client = redis_server.client()
    held = CreditLedger(client, limit_daily=10.0).hold("a", 2.5, producer="p")
    unbudgeted = CreditLedger(client)
    # When its create's charge is settled (its record names the day it held on)
    unbudgeted.settle("a", 1.6, producer="p", held_on=held.day)
    # Then the hold is gone and the charge paid; a job that held nothing only pays
    unbudgeted.settle("b", 2.5, producer="p", held_on=None)
    day = unbudgeted.today(producer="p")
    assert (day.paid, day.reserved) == (4.1, 0.0) and unbudgeted.holds_today() == {}


def test_a_day_book_first_written_by_a_charge_expires_and_later_charges_keep_it(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    ledger = CreditLedger(client)
    ledger.settle("a", 1.6, producer="p", held_on=None)
    ledger.settle("b", 2.5, producer=None, held_on=None)
    books = client.keys("nbq:credit-book:*")
    assert len(books) == 1 and 0 < client.ttl(books[0]) <= 8 * 24 * 3600
    assert ledger.today().paid == 4.1


def test_day_keys_made_again_after_every_hold_was_released_still_expire(
    redis_server: RedisServer,
) -> None:
    # Given a day whose holds were all released (its holds key went with the last one)
    client = redis_server.client()
    ledger = CreditLedger(client, limit_daily=10.0)
    first = ledger.hold("a", 1.6, producer="p")
    ledger.release("a", producer="p", held_on=first.day)
    assert not client.keys("nbq:credit-holds:*")
    # When jobs hold again, one after another
    for job in ("b", "c", "d"):
        assert ledger.hold(job, 1.6, producer="p").held
    # Then both day keys exist and expire
    keys = client.keys("nbq:credit-*")
    assert len(keys) == 2 and all(0 < client.ttl(k) <= 8 * 24 * 3600 for k in keys)
    assert ledger.holds_today() == {"b": 1.6, "c": 1.6, "d": 1.6}
