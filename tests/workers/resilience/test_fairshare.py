"""The per-producer waiting lists and the fair pick: weighted shares of creates between
producers, work-conserving, priorities within a producer, the per-producer cap, leases
that heal — on a real Redis (and one real Cluster)."""

from __future__ import annotations

from collections import Counter
from time import monotonic, sleep
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


def _drain(
    gate: FairShare,
    backlog: dict[str, list[str]],
    creates: int,
    priority: dict[str, str] | None = None,
) -> list[str]:
    """Emulate the submit stage: every job is enqueued on its producer's list, then
    ``creates`` slots (one per create the limiter grants) each take the fairest waiting
    job and claim it. Returns the jobs in create order."""
    for producer, jobs in backlog.items():
        for job in jobs:
            gate.enqueued(job, producer, (priority or {}).get(job))
    return _slots(gate, creates)


def _slots(gate: FairShare, creates: int) -> list[str]:
    order: list[str] = []
    for _ in range(creates):
        took = gate.take("slot", "slot", None, queued=False)
        if took.kind != "pick":
            break
        gate.claimed(took.job_id, took.producer)
        order.append(took.job_id)
    return order


def _backlog(producer: str, n: int) -> list[str]:
    return [f"{producer}~j{i:04d}" for i in range(n)]


def _split(order: list[str]) -> Counter[str]:
    return Counter(job.split("~")[0] for job in order)


def test_a_producer_alone_gets_every_create_in_its_own_order(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    jobs = _backlog("a", 50)
    assert _drain(gate, {"a": jobs}, 60) == jobs  # work-conserving, FIFO


def test_equal_weights_split_creates_evenly_while_both_wait(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    # Given A's backlog of 200 enqueued before B's 20
    gate = FairShare(redis_server.client())
    order = _drain(gate, {"a": _backlog("a", 200), "b": _backlog("b", 20)}, 40)
    # Then while both wait, creates alternate
    assert _split(order) == {"a": 20, "b": 20}
    assert all(order[i][0] != order[i + 1][0] for i in range(39))


def test_weights_three_to_one(redis_server: RedisServer, clock: SimpleNamespace) -> None:
    gate = FairShare(redis_server.client(), weights=parse_weights("shop:3,batch-jobs:1"))
    backlog = {"batch-jobs": _backlog("batch-jobs", 200), "shop": _backlog("shop", 200)}
    assert _split(_drain(gate, backlog, 80)) == {"shop": 60, "batch-jobs": 20}


def test_an_idle_producer_does_not_bank_creates(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    _drain(gate, {"a": _backlog("a", 100)}, 50)  # A alone for a while
    # B arrives: it gets its share from now on, not the 50 creates it "missed"
    order = _drain(gate, {"b": _backlog("b", 100)}, 20)
    assert abs(_split(order)["a"] - _split(order)["b"]) <= 1


def test_a_high_job_goes_before_its_producers_normal_backlog_only(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    a = _backlog("a", 30)
    order = _drain(gate, {"a": a, "b": _backlog("b", 30)}, 10, {"a~j0029": "high"})
    # A's high job (the last of its backlog enqueued) is A's first create ...
    assert next(j for j in order if j.startswith("a~")) == "a~j0029"
    # ... and took A's share, not B's
    assert _split(order) == {"a": 5, "b": 5}


def test_low_jobs_wait_for_their_producers_normal_ones(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    prio = {"a~j0000": "low", "a~j0001": "low"}
    order = _drain(gate, {"a": _backlog("a", 5)}, 5, prio)
    assert order == ["a~j0002", "a~j0003", "a~j0004", "a~j0000", "a~j0001"]


def test_a_producers_in_flight_cap_holds(redis_server: RedisServer, clock: SimpleNamespace) -> None:
    gate = FairShare(redis_server.client(), max_in_flight=2)
    order = _drain(gate, {"a": _backlog("a", 5), "b": _backlog("b", 1)}, 10)
    # A's two claimed jobs hold its cap: B's job goes, then nothing of A's
    assert sorted(order) == ["a~j0000", "a~j0001", "b~j0000"]
    took = gate.take("slot", "slot", None, queued=False, still_in_flight=lambda ids: ids)
    assert (took.kind, took.reason) == ("none", "capped")
    # a~j0000 was stored: at the cap the records are checked, it is forgotten, one goes
    took = gate.take("slot", "slot", None, queued=False, still_in_flight=lambda ids: ids[1:])
    assert (took.kind, took.job_id) == ("pick", "a~j0002")


def test_at_the_cap_every_producers_ended_jobs_are_forgotten_not_only_the_firsts(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    """Both producers at a cap of 1 and both creates ended: each gets its next create in
    turn (checking only the first capped producer gave it every slot, and starved B)."""
    gate = FairShare(redis_server.client(), max_in_flight=1)
    order = _drain(gate, {"a": _backlog("a", 6), "b": _backlog("b", 6)}, 10)
    assert sorted(order) == ["a~j0000", "b~j0000"]
    for _ in range(4):
        took = gate.take("slot", "slot", None, queued=False, still_in_flight=lambda ids: [])
        assert took.kind == "pick"
        gate.claimed(took.job_id, took.producer)
        order.append(took.job_id)
    assert _split(order) == Counter({"a": 3, "b": 3})


def test_without_a_cap_claimed_jobs_leave_nothing_behind(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    """No cap, nothing trims the in-flight sets: so none is written (it grew by a member per
    create, for ever)."""
    client = redis_server.client()
    gate = FairShare(client, max_in_flight=0)
    assert len(_drain(gate, {"a": _backlog("a", 20)}, 20)) == 20
    assert [key for key in client.keys("*") if b":f:" in key] == []


def test_a_queued_job_on_no_list_is_submitted_directly(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    gate.enqueued("b~1", "b", None)
    # a~retry was handed back after a failed create (or enqueued before the lists)
    assert gate.take("a~retry", "a", None, queued=True).kind == "direct"
    # a slot whose job is on a list takes the fairest job
    gate.enqueued("a~1", "a", None)
    assert gate.take("a~1", "a", None, queued=True).job_id in ("a~1", "b~1")


def test_a_slot_with_nothing_waiting_takes_nothing(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    took = gate.take("a~gone", "a", None, queued=False)
    assert (took.kind, took.reason) == ("none", "empty")


def _taken_again(gate: FairShare, timeout_s: float = 10.0) -> str:
    """Slots take until one gets a job (a lease expires by Redis's clock, which no test
    can step: polled, never asserted on)."""
    deadline = monotonic() + timeout_s
    while monotonic() < deadline:
        took = gate.take("s", "s", None, queued=False)
        if took.kind == "pick":
            return took.job_id
        sleep(0.005)
    return ""


def test_a_job_taken_by_a_slot_that_dies_is_taken_again_after_its_lease(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    # Given a slot that took a job and was SIGKILLed before claiming it
    client = redis_server.client()
    gate = FairShare(client, lease_s=30)
    gate.enqueued("a~1", "a", None)
    assert gate.take("s", "s", None, queued=False).job_id == "a~1"
    assert gate.take("s", "s", None, queued=False).kind == "none"  # leased: not twice
    assert [s.waiting for s in gate.snapshot()] == [{"normal": 1}]  # still counted
    # When its lease has lapsed, the next slot takes it again (nothing lost)
    assert _taken_again(FairShare(client, lease_s=0.001)) == "a~1"


def test_lease_ages_come_from_redis_not_from_a_workers_clock(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    """A worker whose clock runs 31 s ahead does not take a job another slot leased a
    moment ago (its lease is 30 s of Redis's clock)."""
    client = redis_server.client()
    gate = FairShare(client, lease_s=30, heal_every_s=0)
    gate.enqueued("a~1", "a", None)
    assert gate.take("s", "s", None, queued=False).job_id == "a~1"
    clock.t += 31  # the worker clocks (enqueue times) move; Redis's does not
    took = gate.take("s", "s", None, queued=False)
    assert (took.kind, took.reason) == ("none", "empty")


def test_expired_leases_are_looked_for_when_nothing_else_waits_or_every_heal_interval(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    client = redis_server.client()
    gate = FairShare(client, lease_s=30)
    for job in ("a~1", "a~2", "a~3"):
        gate.enqueued(job, "a", None)
    assert gate.take("s", "s", None, queued=False).job_id == "a~1"  # its slot dies
    # A process that looked a moment ago does not look again while others wait ...
    hurried = FairShare(client, lease_s=0.001, heal_every_s=3600)
    hurried._heal_due = float("inf")
    assert _taken_again(hurried) == "a~2"
    # ... but as soon as nothing else waits, the expired lease is back in line
    assert _taken_again(hurried) == "a~3"
    assert _taken_again(hurried) == "a~1"


def test_a_job_put_back_keeps_its_place_and_its_producers_share(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    for job, producer in (("a~1", "a"), ("a~2", "a"), ("b~1", "b"), ("b~2", "b")):
        gate.enqueued(job, producer, None)
    first = gate.take("s", "s", None, queued=False)
    gate.put_back(first.job_id)  # the limiter said wait: no create was made
    assert _slots(gate, 4) == ["a~1", "b~1", "a~2", "b~2"]


def test_a_taken_job_that_is_not_created_gives_its_producer_the_charge_back(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    """A slot takes A's job and finds it cancelled meanwhile (release): no create was
    made, so A's share is as if it had never been taken."""
    gate = FairShare(redis_server.client())
    for job, producer in (("a~1", "a"), ("a~2", "a"), ("b~1", "b"), ("b~2", "b")):
        gate.enqueued(job, producer, None)
    assert gate.take("s", "s", None, queued=False).job_id == "a~1"
    gate.release("a~1")  # its record was no longer queued
    assert _slots(gate, 3) == ["a~2", "b~1", "b~2"]


def test_a_job_that_leaves_before_its_take_leaves_the_lists(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    """Cancelled or failed while waiting: never taken, never counted as waiting."""
    gate = FairShare(redis_server.client())
    for job in ("a~1", "a~2"):
        gate.enqueued(job, "a", None)
    gate.left("a~1", "a")
    assert [s.waiting for s in gate.snapshot()] == [{"normal": 1}]
    assert _slots(gate, 5) == ["a~2"]


def test_a_job_that_leaves_while_taken_gives_the_charge_back(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    for job, producer in (("a~1", "a"), ("a~2", "a"), ("b~1", "b")):
        gate.enqueued(job, producer, None)
    assert gate.take("s", "s", None, queued=False).job_id == "a~1"
    gate.left("a~1", "a")  # cancelled between its take and its claim
    assert _slots(gate, 3) == ["a~2", "b~1"]
    assert gate.snapshot() == []


def test_an_enqueue_sent_again_for_a_job_in_flight_does_not_lift_the_cap(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    """A re-sent enqueue of a job already claimed is not listed again (its listing, taken
    and released, dropped the job's in-flight entry: one create past the cap)."""
    gate = FairShare(redis_server.client(), max_in_flight=2)
    gate.enqueued("a~1", "a", None)
    assert _slots(gate, 1) == ["a~1"]  # claimed: in flight
    gate.enqueued("a~1", "a", None)  # the re-sent enqueue
    gate.enqueued("a~2", "a", None)
    gate.enqueued("a~3", "a", None)
    created = []
    for _ in range(3):  # the submit stage: a taken job no longer queued is released
        took = gate.take("s", "s", None, queued=False, still_in_flight=lambda ids: ids)
        if took.job_id == "a~1":
            gate.release(took.job_id)
        elif took.kind == "pick":
            gate.claimed(took.job_id, took.producer)
            created.append(took.job_id)
    assert created == ["a~2"]  # a~1 and a~2 in flight: the cap of 2
    assert [s.in_flight for s in gate.snapshot()] == [2]


def test_a_job_listed_again_while_taken_is_not_taken_twice(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client())
    gate.enqueued("a~1", "a", None)
    assert gate.take("s", "s", None, queued=False).job_id == "a~1"
    gate.enqueued("a~1", "a", None)  # a re-sent enqueue while a~1 is leased
    gate.enqueued("a~2", "a", None)
    assert gate.take("s", "s", None, queued=False).job_id == "a~2"
    gate.claimed("a~1", "a")
    assert gate.take("s", "s", None, queued=False).kind == "none"


def test_jobs_listed_by_the_layout_before_are_moved_once_in_their_order(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    """A deploy while jobs wait: the per-class lists of the layout before (and a job one
    of its slots had taken) are moved into the per-producer lists, order kept."""
    client = redis_server.client()
    gate = FairShare(client)
    base = gate.base
    client.sadd(base + "classes", "a|1", "a|0")
    client.zadd(base + "w:a|1", {"a~1": 100.0, "a~2": 101.0})
    client.zadd(base + "w:a|0", {"a~high": 102.0})
    client.zadd(base + "lease", {"a~0": 98.0})  # taken by an old worker's slot, unclaimed
    client.hset(base + "lease_of", "a~0", "a|1\t99.0\t1")
    client.hset(base + "finish", "a", "1")
    assert gate.migrate() == 4
    assert gate.migrate() == 0  # once
    assert _slots(gate, 5) == ["a~high", "a~0", "a~1", "a~2"]
    assert client.keys(base + "*") == [(base + "finish").encode()]  # a's tag kept


def test_snapshot_shows_waiting_and_shares(
    redis_server: RedisServer, clock: SimpleNamespace
) -> None:
    gate = FairShare(redis_server.client(), weights={"shop": 3})
    gate.enqueued("shop~1", "shop", "high")
    gate.enqueued("x~1", None, None)
    gate.enqueued("x~2", None, "low")
    shares = {s.producer: s for s in gate.snapshot()}
    assert shares["shop"].waiting == {"high": 1} and shares["shop"].share == 0.75
    assert shares[""].waiting == {"normal": 1, "low": 1} and shares[""].share == 0.25


def test_enqueue_is_idempotent(redis_server: RedisServer, clock: SimpleNamespace) -> None:
    gate = FairShare(redis_server.client())
    for _ in range(3):  # a re-sent enqueue (uncertain pipeline, duplicate raw message)
        gate.enqueued("a~1", "a", None)
    assert _slots(gate, 5) == ["a~1"]


def test_weights_setting_is_checked() -> None:
    assert parse_weights(" shop:3, batch-jobs:1 ,") == {"shop": 3.0, "batch-jobs": 1.0}
    for bad in ("shop", "shop:0", "shop:x", ":2"):
        with pytest.raises(ValueError, match="producer:weight"):
            parse_weights(bad)


def test_the_lists_run_on_a_cluster(redis_cluster: RedisCluster, clock: SimpleNamespace) -> None:
    from redis.cluster import ClusterNode
    from redis.cluster import RedisCluster as Client

    nodes = [ClusterNode("127.0.0.1", port) for port in redis_cluster.ports[:3]]
    gate = FairShare(Client(startup_nodes=nodes), max_in_flight=1)  # type: ignore[arg-type]
    gate.enqueued("a~1", "a", "high")
    gate.enqueued("a~2", "a", None)
    gate.enqueued("b~1", "b", None)
    took = gate.take("s", "s", None, queued=False)
    gate.claimed(took.job_id, took.producer)
    assert _slots(gate, 3) == ["b~1"]  # a is at its cap of 1
    assert {s.producer for s in gate.snapshot()} == {"a"}


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


def test_nbq_quota_shows_each_producers_share_and_waiting_jobs(
    redis_server: RedisServer, clock: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from nanobanana_queue.producers.cli.main import app
    from nanobanana_queue.workers.resilience.breaker import SubmissionBreaker

    client = redis_server.client()
    gate = FairShare(client, weights={"shop": 3}, max_in_flight=2)
    gate.enqueued("shop~1", "shop", "high")
    gate.enqueued("shop~2", "shop", None)
    gate.enqueued("batch~1", "batch", None)
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
