"""The submissions breaker: one state in Redis for every worker, probes backing off."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from nanobanana_queue.workers.resilience.breaker import (
    FIRST_PROBE_S,
    SubmissionBreaker,
    seconds_to_utc_midnight,
)
from tests.support.clock import SteppedClock
from tests.support.redis_server import RedisServer


def test_a_closed_breaker_lets_everyone_submit(redis_server: RedisServer) -> None:
    breaker = SubmissionBreaker(redis_server.client(), clock=SteppedClock())
    assert breaker.may_submit() == (True, 0.0)
    assert not breaker.status().is_open


def test_asking_a_closed_breaker_changes_nothing_and_is_never_a_probe(
    redis_server: RedisServer,
) -> None:
    # Given a breaker that tripped once and closed again (its hash keeps the history)
    client = redis_server.client()
    breaker = SubmissionBreaker(client, clock=SteppedClock())
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    assert breaker.close()
    before = client.hgetall(breaker.key)
    # When submits ask it
    assert [breaker.may_submit() for _ in range(10)] == [(True, 0.0)] * 10
    # Then none of them was a probe, and the breaker's state is as it was
    assert not breaker.last_was_probe
    assert client.hgetall(breaker.key) == before
    assert client.keys("*") == [breaker.key.encode()]


def test_a_tripped_breaker_holds_submissions_and_records_why(redis_server: RedisServer) -> None:
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=60, clock=SteppedClock())
    breaker.trip(kind="quota", code="insufficient_quota", message="top up")
    allowed, wait_s = breaker.may_submit()
    assert not allowed and 0 < wait_s <= FIRST_PROBE_S
    status = breaker.status()
    assert status.is_open and status.kind == "quota" and status.code == "insufficient_quota"
    assert status.trips == 1 and status.since is not None


def test_exactly_one_worker_wins_each_probe(redis_server: RedisServer) -> None:
    clock = SteppedClock()
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=0.2, clock=clock)
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    clock.advance(0.25)  # past the first probe's time
    wins: list[bool] = []
    threads = [
        threading.Thread(target=lambda: wins.append(breaker.may_submit()[0])) for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1


def test_a_successful_probe_closes_the_breaker(redis_server: RedisServer) -> None:
    breaker = SubmissionBreaker(redis_server.client(), clock=SteppedClock())
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    assert breaker.close() is True
    assert breaker.may_submit() == (True, 0.0)
    assert breaker.close() is False


def test_a_daily_limit_waits_for_utc_midnight(redis_server: RedisServer) -> None:
    clock = SteppedClock()
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=60, clock=clock)
    breaker.trip(kind="quota", code="token_daily_quota_exceeded", message="x", daily=True)
    _, wait_s = breaker.may_submit()
    assert wait_s == seconds_to_utc_midnight(clock())


def test_midnight_is_counted_in_utc() -> None:
    noon = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
    assert seconds_to_utc_midnight(noon) == 12 * 3600 + 5


def _probe_now(breaker: SubmissionBreaker) -> bool:
    """Make the next probe due at once (a test's clock jump) and try to win it."""
    breaker.redis.hset(breaker.key, "next_probe_at", "0")
    return breaker.may_submit()[0]


def test_probes_start_short_and_double_up_to_the_interval(redis_server: RedisServer) -> None:
    # Given a breaker with the default 60 s interval, tripped by a 402
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=60, clock=SteppedClock())
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    waits = [round(breaker.may_submit()[1])]
    # When each probe's create finds the credits still gone (a 402 trips it again)
    for _ in range(6):
        assert _probe_now(breaker) and breaker.last_was_probe
        breaker.trip(kind="quota", code="insufficient_quota", message="x")
        waits.append(round(breaker.may_submit()[1]))
    # Then the waits before the next probe go 5, 10, 20, 40 s, then the interval
    assert waits == [5, 10, 20, 40, 60, 60, 60]
    assert breaker.status().probes == 6 and breaker.status().trips == 1


def test_a_probe_that_learnt_nothing_is_followed_by_another_at_once(
    redis_server: RedisServer,
) -> None:
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=60, clock=SteppedClock())
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    for _ in range(4):  # a long outage: the back-off is at 60 s
        assert _probe_now(breaker)
        breaker.trip(kind="quota", code="insufficient_quota", message="x")
    # When a probe's create times out (its outcome unknown)
    assert _probe_now(breaker)
    breaker.probe_inconclusive()
    # Then the next submit probes at once, not a minute later
    assert breaker.may_submit()[0] and breaker.last_was_probe


def test_probes_that_learnt_nothing_do_not_lengthen_the_back_off(
    redis_server: RedisServer,
) -> None:
    # Given a breaker one probe into an outage (the next wait is 10 s)
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=60)
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    assert _probe_now(breaker)
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    # When a 5xx storm answers the next five probes (each followed by another at once)
    for _ in range(5):
        assert _probe_now(breaker)
        breaker.probe_inconclusive()
    # Then the next probe that does find the credits gone takes the back-off's next
    # step (20 s), not the interval the five inconclusive probes would have reached
    assert _probe_now(breaker)
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    assert round(breaker.may_submit()[1]) == 20


def test_an_inconclusive_non_probe_create_leaves_the_schedule_alone(
    redis_server: RedisServer,
) -> None:
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=60, clock=SteppedClock())
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    assert not breaker.may_submit()[0]
    breaker.probe_inconclusive()
    assert not breaker.may_submit()[0]


def test_a_reopened_breaker_starts_its_probes_short_again(redis_server: RedisServer) -> None:
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=60, clock=SteppedClock())
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    for _ in range(5):
        assert _probe_now(breaker)
        breaker.trip(kind="quota", code="insufficient_quota", message="x")
    breaker.close()
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    assert 0 < breaker.may_submit()[1] <= FIRST_PROBE_S and breaker.status().probes == 0
