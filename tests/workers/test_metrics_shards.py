"""Sharded metric hashes (a Redis Cluster store): each flush writes one shard's copy, so no
metric is one hot key, and the exporter sums the copies into exactly the scrape one hash
would give. Here the sharded layout is forced on one redis-server (``metrics.set_shards``);
tests/workers/test_cluster_store.py runs it on a real cluster."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobError, JobRecord
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.metrics_exporter import RedisMetricsCollector
from nanobanana_queue.workers.settings import Settings, get_settings
from tests.support.forked import run_forked
from tests.workers.test_metrics import scrape_text, settings, value  # noqa: F401 - fixture

SHARDS = 16
PROCESSES, ROUNDS = 3, 20


def record_events(rounds: int) -> None:
    """One worker process's events: a task's batch (one flush) and single-event flushes."""
    for i in range(rounds):
        with metrics.batched():
            metrics.api_call("create", 200)
            metrics.api_call("query", 429, "rate_limited")
            metrics.job_state("queued")
            metrics.polls_per_job(i % 14)
            metrics.enqueue_to_stored(0.25 * i)  # binary fractions: float sums are exact
            metrics.credits_reserved(0.25)
            metrics.bytes_stored(1000 + i)
        metrics.job_failed("content_policy")
        metrics.dead_letter("poll", f"reason-{i % 3}")
    assert metrics.pending_errors() == 0


def _scrape(client, prefix: str, shards: int) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisMetricsCollector(client, client, prefix=prefix, shards=shards))
    return generate_latest(registry).decode()


def _run(redis_server, monkeypatch: pytest.MonkeyPatch, shards: int) -> tuple[str, str]:
    """The same events, from processes, threads and the job store's scripts; the scrape."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("NBQ_KEY_PREFIX", prefix)
    get_settings.cache_clear()
    metrics.set_shards(shards)
    metrics.api_call("file", 200)  # the parent holds a client before it forks
    # forked children (tests/support/forked.py: why not multiprocessing's fork)
    assert (
        run_forked(record_events, (ROUNDS,), processes=PROCESSES, timeout_s=120) == [0] * PROCESSES
    )
    threads = [threading.Thread(target=record_events, args=(ROUNDS,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    store = JobStore(redis_server.client(), prefix=prefix, shards=shards)
    for n in range(30):  # the store's own state counters; every job ends (gauges at 0)
        job_id = f"job-{n}"
        store.create(JobRecord(job_id=job_id))
        store.apply(lifecycle.CLAIM_SUBMIT, job_id)
        store.apply(lifecycle.FAIL, job_id, error=JobError(code="x", message="y"))
    return prefix, _scrape(redis_server.client(), prefix, shards)


def test_sharded_copies_scrape_exactly_like_one_hash(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the same events recorded unsharded and with 16 shards
    plain_prefix, plain = _run(redis_server, monkeypatch, shards=0)
    sharded_prefix, sharded = _run(redis_server, monkeypatch, shards=SHARDS)
    client = redis_server.client()
    # Then unsharded keeps the classic keys, and sharded writes only shard copies, in
    # every shard
    assert client.exists(f"{plain_prefix}:metrics:c:api_calls")
    assert not client.keys(f"{plain_prefix}:{{s*")
    assert not client.keys(f"{sharded_prefix}:metrics:*")
    copies = client.keys(f"{sharded_prefix}:{{s*}}:metrics:c:api_calls")
    assert len(copies) == SHARDS
    # And the exporter's text is the same, byte for byte
    assert sharded == plain
    samples = scrape_text(sharded)
    n = (PROCESSES + 2) * ROUNDS
    assert value(samples, "nbq_api_calls_total", endpoint="create", status="200", code="") == n
    assert value(samples, "nbq_api_calls_total", endpoint="file", status="200", code="") == 1
    assert value(samples, "nbq_jobs_state_total", state="queued") == n + 30
    assert value(samples, "nbq_jobs_state_total", state="failed") == 30
    assert value(samples, "nbq_polls_per_job_count") == n
    low_polls = sum(1 for i in range(ROUNDS) if i % 14 <= 1)
    assert value(samples, "nbq_polls_per_job_bucket", le="1.0") == low_polls * (PROCESSES + 2)
    assert value(samples, "nbq_enqueue_to_stored_seconds_sum") == (
        (PROCESSES + 2) * sum(0.25 * i for i in range(ROUNDS))
    )
    assert value(samples, "nbq_credits_reserved_total") == 0.25 * n


def test_one_process_spreads_its_flushes_over_every_shard(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
) -> None:
    metrics.set_shards(SHARDS)
    # When one process flushes 16 times
    for _ in range(SHARDS):
        metrics.api_call("create", 200)
    # Then each shard's copy got exactly one (a rotation from a random start)
    client = redis_server.client()
    field = metrics.label_field("create", 200, "")
    per_shard = [
        client.hget(metrics.counter_key(settings.key_prefix, metrics.C_API_CALLS, n), field)
        for n in range(SHARDS)
    ]
    assert per_shard == [b"1"] * SHARDS


def test_one_flush_writes_one_shard_only(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
) -> None:
    metrics.set_shards(SHARDS)
    with metrics.batched():
        metrics.api_call("create", 200)
        metrics.polls_per_job(2)
        metrics.credits_reserved(1.5)
    keys = redis_server.client().keys(f"{settings.key_prefix}:*")
    # one hash tag, so one slot and one round trip on a cluster
    assert len(keys) == 3
    assert len({k.split(b":metrics:")[0] for k in keys}) == 1


def test_errors_and_writes_of_an_unsharded_version_are_summed(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
) -> None:
    # Given metric hashes an earlier version wrote unsharded, and shard copies
    client, prefix = redis_server.client(), settings.key_prefix
    field = metrics.label_field("create", 200, "")
    client.hincrby(metrics.counter_key(prefix, metrics.C_API_CALLS), field, 5)
    client.hincrby(metrics.counter_key(prefix, metrics.C_API_CALLS, 3), field, 2)
    client.hincrby(metrics.counter_key(prefix, metrics.C_METRICS_ERRORS), "[]", 1)
    client.hincrby(metrics.counter_key(prefix, metrics.C_METRICS_ERRORS, 9), "[]", 2)
    client.hincrbyfloat(metrics.histogram_key(prefix, metrics.H_POLLS_PER_JOB, 1), "sum", 4.5)
    client.hincrby(metrics.histogram_key(prefix, metrics.H_POLLS_PER_JOB, 1), "b:5.0", 1)
    client.hincrby(metrics.histogram_key(prefix, metrics.H_POLLS_PER_JOB, 2), "b:5.0", 1)
    client.hincrby(metrics.histogram_key(prefix, metrics.H_POLLS_PER_JOB, 2), "b:+Inf", 1)
    # Then the exporter adds them all up
    samples = scrape_text(_scrape(client, prefix, SHARDS))
    assert value(samples, "nbq_api_calls_total", endpoint="create", status="200", code="") == 7
    assert value(samples, "nbq_metrics_errors_total") == 3
    assert value(samples, "nbq_polls_per_job_bucket", le="4.0") == 0
    assert value(samples, "nbq_polls_per_job_bucket", le="5.0") == 2
    assert value(samples, "nbq_polls_per_job_bucket", le="+Inf") == 3
    assert value(samples, "nbq_polls_per_job_count") == 3
    assert value(samples, "nbq_polls_per_job_sum") == 4.5


def test_the_job_stores_shard_counters_are_the_state_counters_copies() -> None:
    store = JobStore(redis.Redis(), prefix="nbq", shards=SHARDS)  # no connection is made
    copies = metrics.counter_keys("nbq", metrics.C_JOBS_STATE, SHARDS)
    assert copies[0] == store.state_counter_key
    assert copies[1:] == store.state_counter_keys()
    assert store.counter_key("job-1") in copies
