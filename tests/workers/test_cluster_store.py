"""The job store on Redis Cluster: every script's keys in one slot, sharded indexes that
fan out, the metric hashes' shard copies, and the shared parts (breaker, limiter, credits,
metrics, batches) on a real 3-master cluster."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from structlog.testing import capture_logs

from nanobanana_queue.producers.ingress.batches import BatchStore
from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.metrics_exporter import RedisMetricsCollector, build_registry
from nanobanana_queue.workers.redis_client import is_cluster, redis_client
from nanobanana_queue.workers.resilience.credits import CreditLedger
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import ConfigError, get_settings, load_settings
from tests.support.redis_cluster import RedisCluster

SHARDS = 16


def _slot(key: str | bytes) -> int:
    return int(key_slot(key.encode() if isinstance(key, str) else key))


class _Recorder:
    """Stands in for a registered script: records the keys and the key-valued arguments."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.calls: list[tuple[list[str], list[Any]]] = []

    def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        self.calls.append((keys, args))
        return self.reply


def test_every_store_script_touches_keys_of_one_slot_only() -> None:
    store = JobStore(redis.Redis(), prefix="nbq", shards=SHARDS)  # no connection is made
    create, update = _Recorder([1]), _Recorder([1, ["state", "queued"]])
    store._create, store._update = create, update  # type: ignore[assignment]
    for _ in range(200):
        job_id = uuid.uuid4().hex
        store.create(JobRecord(job_id=job_id))
        store.apply(lifecycle.CLAIM_SUBMIT, job_id)
    assert create.calls and update.calls
    for keys, _ in create.calls + update.calls:
        # every key a script touches is in KEYS (tests/workers/jobs/test_store_scripts.py)
        assert len({_slot(k) for k in keys}) == 1, keys


def test_sharded_indexes_spread_over_every_shard_and_no_key_is_shared() -> None:
    store = JobStore(redis.Redis(), prefix="nbq", shards=SHARDS)
    ids = [uuid.uuid4().hex for _ in range(2000)]
    used = {store.index_key(JobState.QUEUED, j) for j in ids}
    assert used == set(store.index_keys(JobState.QUEUED))
    assert len({_slot(k) for k in used}) == SHARDS
    with pytest.raises(ValueError, match="job id"):
        store.index_key(JobState.QUEUED)


def test_a_single_redis_keeps_the_classic_key_layout() -> None:
    store = JobStore(redis.Redis(), prefix="nbq")
    assert store.key("j1") == "nbq:job:j1"
    assert store.index_key(JobState.QUEUED) == "nbq:state:queued"
    assert store.index_keys(JobState.QUEUED) == ["nbq:state:queued"]
    assert store.state_counter_keys() == ["nbq:metrics:c:jobs_state"]


def test_a_cluster_broker_is_refused_at_start_naming_kombu_2204() -> None:
    with pytest.raises(ConfigError, match=r"NBQ_BROKER_URL: .*kombu#2204"):
        load_settings(broker_url="redis+cluster://127.0.0.1:7000")


@pytest.mark.integration
def test_the_shared_parts_run_on_a_3_master_cluster(redis_cluster: RedisCluster) -> None:
    settings = load_settings(broker_url="redis://127.0.0.1:1/0", redis_url=redis_cluster.url)
    rt = Runtime.from_settings(settings)
    assert is_cluster(rt.redis) and rt.store.shards == settings.store_shards
    # Jobs across every shard; listings and counts fan out
    ids = [uuid.uuid4().hex for _ in range(60)]
    for job_id in ids:
        assert rt.store.create(JobRecord(job_id=job_id))[1]
    moved = ids[:20]
    for job_id in moved:
        assert rt.store.apply(lifecycle.CLAIM_SUBMIT, job_id)[1]
    assert rt.store.count_in_state(JobState.QUEUED) == 40
    assert set(rt.store.ids_in_state(JobState.SUBMITTING)) == set(moved)
    assert len(rt.store.ids_in_state(JobState.QUEUED, limit=7)) == 7
    oldest_first = rt.store.ids_in_state(JobState.QUEUED)
    assert oldest_first == [j for j in ids[20:]]  # created in this order
    # The multi-key parts stay in one slot each (a cross-slot call would raise here)
    assert rt.breaker.may_submit() == (True, 0.0)
    rt.breaker.trip(kind="quota", code="insufficient_quota", message="test")
    assert rt.breaker.status().is_open
    rt.limiter.penalise("create", 1.0)
    assert rt.limiter.acquire("create") > 0
    assert len({_slot(k) for k in rt.limiter._keys("create")}) == 1
    ledger = CreditLedger(rt.redis, prefix=settings.key_prefix, limit_daily_per_producer=3.0)
    held = ledger.hold("j1", 2.5, producer="p1")
    assert held.held and not ledger.hold("j2", 2.5, producer="p1").held
    ledger.settle("j1", 2.0, producer="p1", held_on=held.day)
    ledger.ended("j1", "failed", paid=2.0, producer="p1", held_on=held.day)
    assert ledger.spent_today() == ledger.spent_today(producer="p1") == 2.0
    assert ledger.today().failed == 2.0 and ledger.producers_today()["p1"].reserved == 0.0
    batches = BatchStore(rt.redis, rt.store, prefix=settings.key_prefix, retention_s=60)
    batches.add("b1", ids[:30])
    assert batches.counts(batches.job_ids("b1")) == {"submitting": 20, "queued": 10}
    # The exporter sums the shards
    collector = RedisMetricsCollector(
        redis_client(settings), rt.redis, prefix=settings.key_prefix, shards=rt.store.shards
    )
    families = {f.name: f for f in collector._from_store()}
    in_state = {s.labels["state"]: s.value for s in families["nbq_jobs_in_state"].samples}
    assert in_state["queued"] == 40 and in_state["submitting"] == 20
    entries = {
        s.labels["state"]: s.value
        for s in families["nbq_jobs_state"].samples
        if s.name.endswith("_total")
    }
    assert entries["queued"] == 60 and entries["submitting"] == 20


@pytest.mark.integration
def test_a_process_with_another_shard_count_refuses_to_start(redis_cluster: RedisCluster) -> None:
    first = load_settings(broker_url="redis://127.0.0.1:1/0", redis_url=redis_cluster.url)
    Runtime.from_settings(first)
    other = load_settings(
        broker_url="redis://127.0.0.1:1/0", redis_url=redis_cluster.url, store_shards=16
    )
    with pytest.raises(ConfigError, match=r"NBQ_STORE_SHARDS=16 .* built with 64"):
        Runtime.from_settings(other)
    # The exporter too: with fewer shards it would read too few copies of each metric
    with pytest.raises(ConfigError, match=r"NBQ_STORE_SHARDS=16 .* built with 64"):
        build_registry(other)


# -- WAIT on a cluster store (NBQ_STORE_WAIT_REPLICAS) ------------------------------------


def _wait_runtime(cluster: RedisCluster, timeout_ms: int) -> Runtime:
    return Runtime.from_settings(
        load_settings(
            broker_url="redis://127.0.0.1:1/0",
            redis_url=cluster.url,
            store_wait_replicas=1,
            store_wait_timeout_ms=timeout_ms,
        )
    )


def _on_replica(cluster: RedisCluster, replica_port: int, key: str) -> dict[str, str]:
    """``key`` as the replica holds it (one connection: ``READONLY`` is per connection)."""
    replica = redis.Redis(
        host="127.0.0.1", port=replica_port, decode_responses=True, single_connection_client=True
    )
    try:
        replica.execute_command("READONLY")
        return {str(k): str(v) for k, v in replica.hgetall(key).items()}
    finally:
        replica.close()


@pytest.mark.integration
def test_durable_writes_wait_on_the_master_that_owns_the_job_and_reach_its_replica(
    redis_cluster_with_replicas: RedisCluster, request: pytest.FixtureRequest
) -> None:
    cluster = redis_cluster_with_replicas
    rt = _wait_runtime(cluster, timeout_ms=10_000)  # generous: a healthy replica answers
    request.addfinalizer(rt.redis.close)
    ids = [uuid.UUID(int=n).hex for n in range(1, 13)]  # shards on every master
    owner = {j: cluster.master_of(rt.store.key(j)) for j in ids}
    assert len(set(owner.values())) == 3
    replica = {port: cluster.replica_of(port) for port in set(owner.values())}
    for job_id in ids:
        key, master = rt.store.key(job_id), owner[job_id]
        with capture_logs() as logs:
            # When a job is created, then its create's task id recorded (durable)
            assert rt.store.create(JobRecord(job_id=job_id))[1]
            created_on_replica = _on_replica(cluster, replica[master], key)
            claimed = rt.store.apply(lifecycle.CLAIM_SUBMIT, job_id)
            assert claimed[1]
            record, applied = rt.store.apply(
                lifecycle.TASK_CREATED,
                job_id,
                durable=True,
                evolink_task_id=f"task-{job_id}",
                poll_token="p",
            )
            task_on_replica = _on_replica(cluster, replica[master], key)
        # Then both were acknowledged by the replica: no warning, the replica holds them
        assert applied and record is not None
        assert [e for e in logs if e["event"] == "store_write_not_replicated"] == []
        assert created_on_replica["state"] == "queued"
        assert task_on_replica["evolink_task_id"] == f"task-{job_id}"
        # (that the WAIT goes to the job's own master: a frozen replica reports its own
        # master's writes and no other's, tests/faults/test_cluster_replication.py)


@pytest.mark.integration
def test_metric_hashes_spread_over_the_masters_and_the_exporter_sums_them(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch, metrics_on: None
) -> None:
    # Given worker metrics recorded with the store on a cluster (the writer's own client)
    monkeypatch.setenv("NBQ_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("NBQ_REDIS_URL", redis_cluster.url)
    monkeypatch.setenv("NBQ_KEY_PREFIX", f"t{uuid.uuid4().hex[:8]}")
    get_settings.cache_clear()
    settings = get_settings()
    try:
        for i in range(40):
            with metrics.batched():  # one task's flush
                metrics.api_call("create", 200)
                metrics.polls_per_job(i % 5)
                metrics.credits_reserved(0.5)
        assert metrics.pending_errors() == 0
        # Then they sit in shard copies on several slots and masters, none unsharded
        client = redis_client(settings)
        prefix, shards = settings.key_prefix, settings.store_shards
        copies = metrics.counter_keys(prefix, metrics.C_API_CALLS, shards)
        written = [key for key in copies if client.exists(key)]
        assert copies[0] not in written
        assert len(written) == 40  # 40 flushes, each to the next of 64 shards
        assert len({_slot(key) for key in written}) == 40
        assert len({redis_cluster.master_of(key) for key in written}) > 1
        # And the exporter reads every copy (one pipeline, split per node) and sums them
        collector = RedisMetricsCollector(client, client, prefix=prefix, shards=shards)
        samples = {s.name: s.value for f in collector._from_store() for s in f.samples}
        assert samples["nbq_api_calls_total"] == 40
        assert samples["nbq_polls_per_job_count"] == 40
        assert samples["nbq_polls_per_job_sum"] == 8 * (0 + 1 + 2 + 3 + 4)
        assert samples["nbq_credits_reserved_total"] == 20.0
    finally:
        get_settings.cache_clear()
