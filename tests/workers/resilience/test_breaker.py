"""The submissions breaker: one state in Redis for every worker, one probe per interval."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from tests.support.redis_server import RedisServer
from workers.resilience.breaker import SubmissionBreaker, seconds_to_utc_midnight


def test_a_closed_breaker_lets_everyone_submit(redis_server: RedisServer) -> None:
    breaker = SubmissionBreaker(redis_server.client())
    assert breaker.may_submit() == (True, 0.0)
    assert not breaker.status().is_open


def test_asking_a_closed_breaker_is_one_hget(redis_server: RedisServer) -> None:
    client = redis_server.client()
    breaker = SubmissionBreaker(client)
    breaker.may_submit()  # warm-up
    before = client.info("commandstats")
    assert [breaker.may_submit() for _ in range(10)] == [(True, 0.0)] * 10
    after = client.info("commandstats")
    assert after["cmdstat_hget"]["calls"] - before["cmdstat_hget"]["calls"] == 10
    assert "cmdstat_evalsha" not in after and not breaker.last_was_probe


def test_a_tripped_breaker_holds_submissions_and_records_why(redis_server: RedisServer) -> None:
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=60)
    breaker.trip(kind="quota", code="insufficient_quota", message="top up")
    allowed, wait_s = breaker.may_submit()
    assert not allowed and 55 < wait_s <= 60
    status = breaker.status()
    assert status.is_open and status.kind == "quota" and status.code == "insufficient_quota"
    assert status.trips == 1 and status.since is not None


def test_exactly_one_worker_wins_each_probe(redis_server: RedisServer) -> None:
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=0.2)
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    time.sleep(0.25)
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
    breaker = SubmissionBreaker(redis_server.client())
    breaker.trip(kind="quota", code="insufficient_quota", message="x")
    assert breaker.close() is True
    assert breaker.may_submit() == (True, 0.0)
    assert breaker.close() is False


def test_a_daily_limit_waits_for_utc_midnight(redis_server: RedisServer) -> None:
    breaker = SubmissionBreaker(redis_server.client(), probe_interval_s=60)
    breaker.trip(kind="quota", code="token_daily_quota_exceeded", message="x", daily=True)
    _, wait_s = breaker.may_submit()
    assert abs(wait_s - seconds_to_utc_midnight(time.time())) < 2


def test_midnight_is_counted_in_utc() -> None:
    noon = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
    assert seconds_to_utc_midnight(noon) == 12 * 3600 + 5
