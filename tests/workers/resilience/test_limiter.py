"""The shared rate limiter: one token bucket per call kind for every worker process."""

from __future__ import annotations

import multiprocessing

import pytest
import redis

from nanobanana_queue.workers.resilience.limiter import SharedRateLimiter
from tests.support.clock import SteppedClock
from tests.support.redis_server import RedisServer


def test_an_unlimited_kind_always_grants_a_token(redis_server: RedisServer) -> None:
    limiter = SharedRateLimiter(redis_server.client(), rates_per_s={})
    assert all(limiter.acquire("create") == 0 for _ in range(50))


def test_tokens_beyond_the_burst_wait_for_the_refill(redis_server: RedisServer) -> None:
    clock = SteppedClock()
    limiter = SharedRateLimiter(redis_server.client(), rates_per_s={"create": 5}, clock=clock)
    granted = [limiter.acquire("create") for _ in range(8)]
    assert granted[:5] == [0, 0, 0, 0, 0]
    assert all(0 < wait <= 0.2 + 1e-9 for wait in granted[5:])  # one token's refill at 5/s
    # When one token's refill time has passed, one more is granted, and only one
    clock.advance(0.2)
    assert limiter.acquire("create") == 0 and limiter.acquire("create") > 0


def test_a_token_given_back_is_granted_again_but_never_past_the_burst(
    redis_server: RedisServer,
) -> None:
    clock = SteppedClock()
    limiter = SharedRateLimiter(redis_server.client(), rates_per_s={"create": 2}, clock=clock)
    assert [limiter.acquire("create") for _ in range(2)] == [0, 0]
    limiter.give_back("create")  # the create it was for was not made
    assert limiter.acquire("create") == 0 and limiter.acquire("create") > 0
    for _ in range(5):
        limiter.give_back("create")
    assert [limiter.acquire("create") == 0 for _ in range(3)] == [True, True, False]


def _take(url: str, now: float, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    clock = SteppedClock(now)
    limiter = SharedRateLimiter(redis.Redis.from_url(url), rates_per_s={"query": 10}, clock=clock)
    out.put(sum(1 for _ in range(n) if limiter.acquire("query") == 0))


@pytest.mark.integration  # four Python processes
def test_the_bucket_is_shared_by_every_process(redis_server: RedisServer) -> None:
    # Given four processes racing for the same 10-token bucket, their clocks stopped at
    # the same instant (so nothing refills while they race)
    # (spawned: a forked child runs kombu's after-fork pool cleanup, which can hang on a
    # connection another test left in the process — tests/support/forked.py)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    now = SteppedClock().now
    procs = [ctx.Process(target=_take, args=(redis_server.url, now, 20, out)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    granted = sum(out.get(timeout=5) for _ in procs)
    # Then together they got one burst, not one burst each
    assert granted == 10


def test_a_429_blocks_the_kind_for_retry_after_then_halves_its_rate(
    redis_server: RedisServer,
) -> None:
    clock = SteppedClock()
    limiter = SharedRateLimiter(redis_server.client(), rates_per_s={"create": 100}, clock=clock)
    limiter.penalise("create", retry_after_s=0.3)
    assert limiter.acquire("create") == pytest.approx(0.3)
    clock.advance(0.3)
    assert limiter.acquire("create") == 0
    assert redis_server.client().exists("nbq:limit:create:penalty")


def test_a_429_blocks_even_an_unlimited_kind(redis_server: RedisServer) -> None:
    limiter = SharedRateLimiter(redis_server.client(), rates_per_s={}, clock=SteppedClock())
    limiter.penalise("query", retry_after_s=None, default_s=5)
    assert limiter.acquire("query") == pytest.approx(5)


def test_an_unlimited_kind_grants_every_token_and_keeps_no_bucket(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    limiter = SharedRateLimiter(client, rates_per_s={"create": 0.0})
    assert [limiter.acquire("create") for _ in range(10)] == [0.0] * 10
    assert client.keys("*") == []  # no bucket written: only a 429's block is read
