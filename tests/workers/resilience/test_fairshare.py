"""The fair-share gate: weighted shares of creates between producers, work-conserving,
priorities within a producer, the per-producer cap, self-healing waiting counts — on a
real Redis (and one real Cluster)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from nanobanana_queue.workers.resilience import fairshare
from nanobanana_queue.workers.resilience.fairshare import FairShare, parse_weights
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The gate's clock, moved by hand (no test waits on wall time)."""
    now = SimpleNamespace(t=1_000_000.0)
    monkeypatch.setattr(fairshare, "time", SimpleNamespace(time=lambda: now.t))
    return now


def _run(
    gate: FairShare,
    backlog: dict[str, list[str]],
    asks_per_round: dict[str, int],
    creates: int,
    clock: SimpleNamespace,
    priority: dict[str, str] | None = None,
) -> list[str]:
    """Emulate the submit stage at one create per round (the rate limiter): every job's
    message reaches the gate once (the queue's first pass, no token left), then each
    round each producer's jobs ask in turn (a flooding producer asks more often); an
    admitted job takes the round's token and claims its create, or is refunded when the
    token is gone. Returns the jobs in create order."""
    order: list[str] = []
    cursor = dict.fromkeys(backlog, 0)

    def ask(producer: str, job: str, tokens: int) -> int:
        prio = (priority or {}).get(job)
        if not gate.admit(job, producer, prio).allowed:
            return tokens
        if tokens == 0:
            gate.refund(producer)
            return tokens
        gate.claimed(job, producer, prio)
        backlog[producer].remove(job)
        order.append(job)
        return tokens - 1

    for producer, jobs in backlog.items():
        for job in list(jobs):
            ask(producer, job, 0)
    while len(order) < creates:
        clock.t += 0.05
        tokens = 1
        for producer, n in asks_per_round.items():
            jobs = backlog[producer]
            for _ in range(n):
                if not jobs:
                    break
                job = jobs[cursor[producer] % len(jobs)]
                cursor[producer] += 1
                tokens = ask(producer, job, tokens)
    return order[:creates]


def _backlog(producer: str, n: int) -> list[str]:
    return [f"{producer}~j{i:04d}" for i in range(n)]


def test_a_producer_alone_gets_every_create(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    assert all(gate.admit(f"a~{i}", "a").allowed for i in range(50))


def test_equal_weights_split_creates_evenly_while_both_wait(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    # Given A flooding the queue (10 asks for each of B's)
    gate = FairShare(redis_server.client())
    order = _run(
        gate, {"a": _backlog("a", 200), "b": _backlog("b", 20)}, {"a": 10, "b": 1}, 40, clock
    )
    # Then while both wait, creates alternate
    split = Counter(job.split("~")[0] for job in order)
    assert split == {"a": 20, "b": 20}


def test_weights_three_to_one(redis_server: RedisServer, clock: SimpleNamespace) -> None:
    gate = FairShare(redis_server.client(), weights=parse_weights("shop:3,batch-jobs:1"))
    order = _run(
        gate,
        {"shop": _backlog("shop", 200), "batch-jobs": _backlog("batch-jobs", 200)},
        {"shop": 1, "batch-jobs": 10},
        80,
        clock,
    )
    split = Counter(job.split("~")[0] for job in order)
    assert split == {"shop": 60, "batch-jobs": 20}


def test_an_idle_producer_does_not_bank_creates(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    _run(gate, {"a": _backlog("a", 100)}, {"a": 5}, 50, clock)  # A alone for a while
    # B arrives: it gets its share from now on, not the 50 creates it "missed"
    order = _run(
        gate, {"a": _backlog("a2", 100), "b": _backlog("b", 100)}, {"a": 5, "b": 5}, 20, clock
    )
    split = Counter(job.split("~")[0] for job in order)
    assert abs(split["a2"] - split["b"]) <= 2


def test_a_high_job_goes_before_its_producers_normal_backlog_only(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    a = _backlog("a", 30)
    prio = {"a~j0029": "high"}
    order = _run(gate, {"a": a, "b": _backlog("b", 30)}, {"a": 30, "b": 3}, 10, clock, prio)
    # A's high job (the last of its backlog to ask) is A's first create ...
    assert next(j for j in order if j.startswith("a~")) == "a~j0029"
    # ... and took A's share, not B's
    split = Counter(job.split("~")[0] for job in order)
    assert split == {"a": 5, "b": 5}


def test_a_normal_job_waits_while_its_producer_has_a_high_one(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    assert gate.admit("a~high", "a", "high").allowed
    assert gate.admit("a~high2", "a", "high").allowed  # not yet claimed: still waiting
    decision = gate.admit("a~normal", "a", "normal")
    assert (decision.allowed, decision.reason) == (False, "priority")
    assert gate.admit("b~normal", "b", "low").allowed  # other producers are not held back
    gate.claimed("b~normal", "b", "low")
    gate.claimed("a~high", "a", "high")
    gate.claimed("a~high2", "a", "high")
    assert gate.admit("a~normal", "a", "normal").allowed


def test_a_producers_in_flight_cap_holds(redis_server: RedisServer, clock: SimpleNamespace) -> None:
    gate = FairShare(redis_server.client(), max_in_flight=2)
    for job in ("a~1", "a~2"):
        assert gate.admit(job, "a").allowed
        gate.claimed(job, "a", None)
    decision = gate.admit("a~3", "a", still_in_flight=lambda ids: ids)
    assert (decision.allowed, decision.reason) == (False, "producer_in_flight")
    assert gate.admit("b~1", "b").allowed  # the cap is per producer
    gate.claimed("b~1", "b", None)
    # a~1 was stored: at the cap the gate checks, forgets it, and admits a~3
    assert gate.admit(
        "a~3", "a", still_in_flight=lambda ids: [i for i in ids if i != "a~1"]
    ).allowed


def test_jobs_that_stop_asking_stop_counting(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client(), idle_s=30)
    assert gate.admit("a~1", "a").allowed
    assert gate.admit("b~gone", "b").allowed  # b's job asked once, then was lost
    assert gate.admit("a~2", "a").allowed
    assert not gate.admit("a~3", "a").allowed  # b still counts as waiting
    clock.t += 31
    assert gate.admit("a~3", "a").allowed  # b's stale job no longer holds A back
    assert [s.producer for s in gate.snapshot()] == ["a"]


def test_snapshot_shows_waiting_and_shares(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client(), weights={"shop": 3})
    gate.admit("shop~1", "shop", "high")
    gate.admit("x~1", None)
    gate.admit("x~2", None, "low")
    shares = {s.producer: s for s in gate.snapshot()}
    assert shares["shop"].waiting == {"high": 1} and shares["shop"].share == 0.75
    assert shares[""].waiting == {"normal": 1, "low": 1} and shares[""].share == 0.25


def test_weights_setting_is_checked() -> None:
    assert parse_weights(" shop:3, batch-jobs:1 ,") == {"shop": 3.0, "batch-jobs": 1.0}
    for bad in ("shop", "shop:0", "shop:x", ":2"):
        with pytest.raises(ValueError, match="producer:weight"):
            parse_weights(bad)


def test_the_gate_runs_on_a_cluster(redis_cluster: RedisCluster, clock: SimpleNamespace) -> None:
    from redis.cluster import ClusterNode
    from redis.cluster import RedisCluster as Client

    nodes = [ClusterNode("127.0.0.1", port) for port in redis_cluster.ports[:3]]
    gate = FairShare(Client(startup_nodes=nodes), max_in_flight=1)  # type: ignore[arg-type]
    assert gate.admit("a~1", "a", "high").allowed
    gate.claimed("a~1", "a", "high")
    assert gate.admit("b~1", "b").allowed
    assert not gate.admit("a~2", "a", still_in_flight=lambda ids: ids).allowed
    assert {s.producer for s in gate.snapshot()} == {"a", "b"}  # b~1 not yet claimed


def test_a_raw_messages_priority_is_checked_by_the_guard() -> None:
    from nanobanana_queue.workers.guard.inspect import check_body

    body = {"request": {"prompt": "a"}, "producer": "shop"}
    assert check_body("nbq.generate", [[], {**body, "priority": "high"}, {}]) is None
    refused = check_body("nbq.generate", [[], {**body, "priority": "urgent"}, {}])
    assert refused is not None and "priority" in refused.detail


def test_the_generate_message_carries_a_jobs_priority_only_when_not_normal() -> None:
    from nanobanana_queue.workers.dispatch import envelope
    from nanobanana_queue.workers.stages.steps import Generate

    assert envelope(Generate("j", {}, priority="high")).kwargs["priority"] == "high"
    assert "priority" not in envelope(Generate("j", {})).kwargs


def test_submit_asks_the_gate_before_the_rate_limiter_and_claims_in_it(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    from nanobanana_queue.workers.jobs.record import JobRecord
    from nanobanana_queue.workers.jobs.state import JobState
    from nanobanana_queue.workers.resilience.fairshare import fair_gate

    client = redis_server.client()
    gate = FairShare(client)
    rt = SimpleNamespace(fair=lambda: gate, store=SimpleNamespace(get=lambda _id: None))
    first = JobRecord(job_id="a~1", producer="a", state=JobState.QUEUED)
    assert fair_gate(rt, first) is None  # type: ignore[arg-type]
    gate.admit("b~1", "b")  # b waits too (admitted, not yet claimed)
    assert fair_gate(rt, JobRecord(job_id="a~2", producer="a")) is None  # type: ignore[arg-type]
    reason, wait_s = fair_gate(rt, JobRecord(job_id="a~3", producer="a")) or ("", 0.0)  # type: ignore[arg-type]
    assert reason == "fair_share" and wait_s > 0  # deferred by a countdown, never a sleep


def test_nbq_quota_shows_each_producers_share_and_waiting_jobs(
    redis_server: RedisServer, clock: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from nanobanana_queue.producers.cli.main import app
    from nanobanana_queue.workers.resilience.breaker import SubmissionBreaker

    client = redis_server.client()
    gate = FairShare(client, weights={"shop": 3}, max_in_flight=2)
    gate.admit("shop~1", "shop", "high")
    gate.admit("shop~2", "shop")
    gate.admit("batch~1", "batch")
    rt = SimpleNamespace(
        breaker=SubmissionBreaker(client),
        store=SimpleNamespace(count_in_state=lambda _state: 3),
        fair=lambda: gate,
    )
    monkeypatch.setattr("nanobanana_queue.workers.runtime.get_runtime", lambda: rt)
    result = CliRunner().invoke(app, ["quota", "--json"])
    assert result.exit_code == 0, result.output
    producers = json.loads(result.output)["producers"]
    assert producers["shop"] == {
        "waiting": {"high": 1, "normal": 1},
        "weight": 3.0,
        "share": 0.75,
        "in_flight": 0,
    }
    assert producers["batch"]["share"] == 0.25
    table = CliRunner().invoke(app, ["quota"]).output
    assert "share 75% (weight 3), waiting 1 high, 1 normal" in table


def test_an_enqueued_job_counts_at_once_by_default(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    assert gate.admit("a~1", "a").allowed
    gate.claimed("a~1", "a", None)
    gate.enqueued("b~1", "b", None)  # b's message is still behind a's backlog
    assert not gate.admit("a~2", "a").allowed  # a leaves b its turn already
    assert gate.admit("b~1", "b").allowed


def test_a_job_waits_from_its_enqueue_before_its_message_reaches_a_worker(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    assert gate.admit("a~1", "a").allowed
    gate.claimed("a~1", "a", None)
    gate.grace_s = 1.0  # (default 0: at once)
    gate.enqueued("b~1", "b", None)  # b's message is still behind a's backlog
    assert gate.admit("a~2", "a").allowed  # for a moment a keeps the rate (no idle API)
    gate.claimed("a~2", "a", None)
    clock.t += 1.5
    assert not gate.admit("a~3", "a").allowed  # then a leaves b its turn
    assert gate.admit("b~1", "b").allowed
    assert [s.waiting for s in gate.snapshot() if s.producer == "a"] == [{"normal": 1}]
