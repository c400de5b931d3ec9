"""Project metrics: hooks write shared counters in Redis; the exporter reads exact totals.

Every test owns a redis-server (``redis_server`` fixture) and a unique key prefix.
"""

from __future__ import annotations

import multiprocessing
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from multiprocessing.context import SpawnContext

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, JobState
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.metrics_exporter import (
    RedisMetricsCollector,
    build_registry,
    make_metrics_server,
)
from nanobanana_queue.workers.settings import Settings, get_settings
from tests.support.forked import run_forked
from tests.support.procs import free_port, port_open, python_exe, start, stop, wait_until
from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server(redis_process: RedisServer) -> RedisServer:
    """Some of these tests stop Redis: each has a server of its own."""
    return redis_process


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_text(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def scrape(settings: Settings) -> Samples:
    return scrape_text(generate_latest(build_registry(settings)).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def settings(redis_server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("NBQ_BROKER_URL", redis_server.url)
    monkeypatch.delenv("NBQ_REDIS_URL", raising=False)
    monkeypatch.setenv("NBQ_KEY_PREFIX", f"t{uuid.uuid4().hex[:8]}")
    get_settings.cache_clear()
    metrics.reset()
    metrics.set_enabled(True)  # tests/support/metrics_guard turns it off for other tests
    yield get_settings()
    get_settings.cache_clear()
    metrics.reset()
    metrics.set_enabled(False)


def emit_events(rounds: int) -> None:
    """One worker process's share of events (module level so ``spawn`` can import it)."""
    for i in range(rounds):
        metrics.job_state("queued")
        metrics.job_state(JobState.STORED)
        metrics.job_failed("content_policy")
        metrics.api_call("create", 200)
        metrics.api_call("query", 429, "rate_limited")
        metrics.polls_per_job(i % 12)
        metrics.enqueue_to_stored(0.5)
        metrics.bytes_stored(1000)
        metrics.credits_reserved(0.25)
        metrics.limiter_wait("create")
    assert metrics.pending_errors() == 0


def run_processes(context: str, processes: int, rounds: int) -> None:
    if context == "fork":  # (tests/support/forked.py: why not multiprocessing's fork)
        assert (
            run_forked(emit_events, (rounds,), processes=processes, timeout_s=60) == [0] * processes
        )
        return
    ctx = multiprocessing.get_context(context)
    assert isinstance(ctx, SpawnContext)
    procs = [ctx.Process(target=emit_events, args=(rounds,)) for _ in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0


@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_totals_are_exact_across_worker_processes(settings: Settings, context: str) -> None:
    # Given a parent that already holds a metrics client (so forked children inherit it)
    metrics.job_state("queued")
    # When four processes each record the same 25 rounds of events
    run_processes(context, processes=4, rounds=25)
    # Then one scrape shows the exact totals of all of them
    samples = scrape(settings)
    n = 4 * 25
    assert value(samples, "nbq_jobs_state_total", state="queued") == n + 1
    assert value(samples, "nbq_jobs_state_total", state="stored") == n
    assert value(samples, "nbq_jobs_failed_total", reason="content_policy") == n
    assert value(samples, "nbq_api_calls_total", endpoint="create", status="200", code="") == n
    assert (
        value(samples, "nbq_api_calls_total", endpoint="query", status="429", code="rate_limited")
        == n
    )
    assert value(samples, "nbq_polls_per_job_count") == n
    assert value(samples, "nbq_enqueue_to_stored_seconds_sum") == pytest.approx(0.5 * n)
    assert value(samples, "nbq_bytes_stored_total") == 1000 * n
    assert value(samples, "nbq_credits_reserved_total") == pytest.approx(0.25 * n)
    assert value(samples, "nbq_limiter_waits_total", kind="create") == n
    assert value(samples, "nbq_metrics_errors_total") == 0


def test_histogram_buckets_are_cumulative_with_inclusive_bounds(settings: Settings) -> None:
    for polls in (1, 2, 2, 5, 6, 50, 51, 200):
        metrics.polls_per_job(polls)

    samples = scrape(settings)

    def bucket(le: str) -> float:
        return value(samples, "nbq_polls_per_job_bucket", le=le)

    assert bucket("1.0") == 1
    assert bucket("2.0") == 3
    assert bucket("5.0") == 4
    assert bucket("7.0") == 5
    assert bucket("50.0") == 6
    assert bucket("+Inf") == 8
    assert value(samples, "nbq_polls_per_job_count") == 8
    assert value(samples, "nbq_polls_per_job_sum") == 1 + 2 + 2 + 5 + 6 + 50 + 51 + 200


def test_histogram_bounds_are_the_documented_ones(settings: Settings) -> None:
    samples = scrape(settings)
    les = [labels[0][1] for (name, labels) in samples if name == "nbq_polls_per_job_bucket"]
    assert les == [repr(float(b)) for b in metrics.POLLS_BUCKETS] + ["+Inf"]
    assert metrics.POLLS_BUCKETS == (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50)


def test_hooks_never_raise_and_count_errors_until_redis_is_back(settings, redis_server) -> None:
    # Given Redis is down
    redis_server.stop()
    # When every hook is called (and one with a nonsense value)
    metrics.job_state("queued")
    metrics.api_call("create", "error", "connect")
    metrics.polls_per_job(3)
    metrics.enqueue_to_stored(float("nan"))
    metrics.quota_breaker(True)
    # Then nothing raised and each failure is counted locally
    assert metrics.pending_errors() == 5
    # When Redis is back, the next successful write carries the error count along
    redis_server.start()
    metrics.job_state("queued")
    assert metrics.pending_errors() == 0
    samples = scrape(settings)
    assert value(samples, "nbq_metrics_errors_total") == 5
    assert value(samples, "nbq_jobs_state_total", state="queued") == 1


def test_jobs_in_state_and_oldest_age_come_from_the_job_store_index(settings, redis_server):
    # Given three jobs created through the real job store, one moved on to submitting
    store = JobStore(redis_server.client(), prefix=settings.key_prefix)
    for job_id in ("a", "b", "c"):
        store.create(JobRecord(job_id=job_id))
    store.apply(lifecycle.CLAIM_SUBMIT, "c")
    oldest_queued = store.redis.zscore(store.index_key(JobState.QUEUED), "a")
    assert oldest_queued is not None
    # When the exporter scrapes with a clock 100 s after the first job
    collector = RedisMetricsCollector(
        redis_server.client(),
        redis_server.client(),
        prefix=settings.key_prefix,
        clock=lambda: oldest_queued + 100.0,
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }
    # Then the gauges count each active state and age its least recently updated job
    assert value(samples, "nbq_jobs_in_state", state="queued") == 2
    assert value(samples, "nbq_jobs_in_state", state="submitting") == 1
    assert value(samples, "nbq_jobs_in_state", state="generating") == 0
    assert value(samples, "nbq_oldest_job_age_seconds", state="queued") == pytest.approx(100.0)
    assert value(samples, "nbq_oldest_job_age_seconds", state="generating") == 0
    assert {lbl[0][1] for (n, lbl) in samples if n == "nbq_jobs_in_state"} == {
        s.value for s in ACTIVE_STATES
    }


def test_quota_breaker_gauge_reads_the_breaker_hash(settings, redis_server) -> None:
    key = f"{settings.key_prefix}:breaker:quota"
    assert value(scrape(settings), "nbq_quota_breaker_open") == 0  # absent = closed
    redis_server.client().hset(key, mapping={"state": "open", "kind": "quota"})
    assert value(scrape(settings), "nbq_quota_breaker_open") == 1
    redis_server.client().hset(key, "state", "closed")
    assert value(scrape(settings), "nbq_quota_breaker_open") == 0


def test_queue_length_counts_celery_messages_per_queue(settings: Settings) -> None:
    # Given messages published by the real Celery app (one with a priority)
    app = create_app(settings)
    try:
        app.send_task("nbq.poll", kwargs={"job_id": "x"})
        app.send_task("nbq.poll", kwargs={"job_id": "y"}, priority=6)
        app.send_task("nbq.download", kwargs={"job_id": "z"})
    finally:
        app.close()
    # Then each queue's backlog is exact, priority lists included
    samples = scrape(settings)
    assert value(samples, "nbq_queue_length", queue="poll") == 2
    assert value(samples, "nbq_queue_length", queue="download") == 1
    assert value(samples, "nbq_queue_length", queue="submit") == 0


def test_state_counters_are_exported_as_zero_before_the_first_event(settings) -> None:
    samples = scrape(settings)
    for state in JobState:
        assert value(samples, "nbq_jobs_state_total", state=state.value) == 0


def test_every_declared_metric_is_exported_with_its_type(settings: Settings) -> None:
    text = generate_latest(build_registry(settings)).decode()
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    assert types == {name: spec.kind for name, spec in metrics.METRICS.items()}
    assert {name for (name, _) in scrape_text(text)} <= metrics.series_names()


def test_scrape_answers_when_redis_is_down(settings, redis_server) -> None:
    redis_server.stop()
    samples = scrape(settings)
    assert value(samples, "nbq_metrics_redis_up") == 0
    assert value(samples, "nbq_metrics_errors_total") >= 1


def test_recording_can_be_turned_off(settings: Settings) -> None:
    metrics.set_enabled(False)
    metrics.job_state("queued")
    metrics.set_enabled(True)
    assert value(scrape(settings), "nbq_jobs_state_total", state="queued") == 0


def test_http_endpoint_serves_the_totals(settings: Settings) -> None:
    metrics.bytes_stored(123)
    port = free_port()
    server = make_metrics_server(settings, address="127.0.0.1", port=port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert value(scrape_text(body), "nbq_bytes_stored_total") == 123


def test_serve_metrics_runs_until_sigterm_and_exits_cleanly(settings, redis_server, tmp_path):
    # Given `serve_metrics` in its own process, as `nbq metrics` runs it
    port = free_port()
    code = (
        "from nanobanana_queue.workers.metrics_exporter import serve_metrics; "
        "from nanobanana_queue.workers.settings import get_settings; "
        f"serve_metrics(get_settings(), address='127.0.0.1', port={port})"
    )
    proc = start(
        [python_exe(), "-c", code],
        env={"NBQ_BROKER_URL": redis_server.url, "NBQ_KEY_PREFIX": settings.key_prefix},
        log=tmp_path / "metrics.log",
    )
    try:
        wait_until(lambda: port_open(port), what="metrics port")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert b"nbq_queue_length" in resp.read()
    finally:
        # When it gets SIGTERM (docker stop), Then it exits on its own with status 0
        stop(proc)
    assert proc.returncode == 0, (tmp_path / "metrics.log").read_text()
