"""The ``nbq metrics`` exporter: one scrape target with exact totals for all workers.

A custom collector reads, at scrape time, the counters and histograms that every worker
process adds to Redis (``workers/metrics.py``), plus live gauges: jobs per active state
(the job store's per-state indexes), the oldest job per state, the quota breaker, and the
Celery queue lengths on the broker. Nothing is cached, so the exporter is stateless and
any number of replicas give the same answer.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from nanobanana_queue.workers import metrics as m
from nanobanana_queue.workers.broker_queues import UNACKED_KEY, amqp_queue_lengths, queue_lengths
from nanobanana_queue.workers.brokers import broker_kind
from nanobanana_queue.workers.contract import ALL_QUEUES
from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, JobState
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.redis_client import check_store_shards, is_cluster, redis_client
from nanobanana_queue.workers.resilience.breaker import breaker_key
from nanobanana_queue.workers.settings import Settings

_COUNTERS: tuple[tuple[str, str], ...] = (
    ("nbq_jobs_state_total", m.C_JOBS_STATE),
    ("nbq_jobs_failed_total", m.C_JOBS_FAILED),
    ("nbq_api_calls_total", m.C_API_CALLS),
    ("nbq_bytes_stored_total", m.C_BYTES_STORED),
    ("nbq_credits_reserved_total", m.C_CREDITS_RESERVED),
    ("nbq_limiter_waits_total", m.C_LIMITER_WAITS),
    ("nbq_fair_share_total", m.C_FAIR_SHARE),
    ("nbq_quota_breaker_transitions_total", m.C_BREAKER_TRANSITIONS),
    ("nbq_dead_letters_total", m.C_DEAD_LETTERS),
    ("nbq_dead_letters_dropped_total", m.C_DEAD_LETTERS_DROPPED),
    ("nbq_store_resets_total", m.C_STORE_RESETS),
    ("nbq_jobs_rescued_total", m.C_JOBS_RESCUED),
    ("nbq_jobs_lost_total", m.C_JOBS_LOST),
    ("nbq_notifications_total", m.C_NOTIFICATIONS),
    ("nbq_ownership_refused_total", m.C_OWNERSHIP_REFUSED),
    ("nbq_http_requests_total", m.C_HTTP_REQUESTS),
)
_HISTOGRAMS: tuple[tuple[str, str], ...] = (
    ("nbq_polls_per_job", m.H_POLLS_PER_JOB),
    ("nbq_enqueue_to_stored_seconds", m.H_ENQUEUE_TO_STORED),
    ("nbq_http_request_duration_seconds", m.H_HTTP_SECONDS),
)

#: Label sets exported as 0 before their first event, so ``increase()`` sees the first one
#: (unlabelled counters are always exported).
_SEEDED: dict[str, tuple[tuple[str, ...], ...]] = {
    "nbq_jobs_state_total": tuple((state.value,) for state in JobState),
    "nbq_quota_breaker_transitions_total": (("open",), ("closed",)),
    "nbq_jobs_rescued_total": (("poll",), ("download",), ("submit",)),
    "nbq_jobs_lost_total": (("submit",), ("poll",), ("download",)),
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode_hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _labels(field: str, n: int) -> list[str] | None:
    """Label values from a hash field; ``None`` for a field of another shape (skipped)."""
    try:
        values = json.loads(field)
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != n:
        return None
    return [str(v) for v in values]


def _number(value: str) -> float:
    number = float(value)
    return number if math.isfinite(number) else 0.0


def summed_hashes(raws: list[dict[Any, Any]]) -> dict[str, str]:
    """The copies of one metric hash (its shards), added up field by field.

    Every field is a plain sum (counts, non-cumulative buckets, ``sum``), so the result is
    what one unsharded hash would hold. A field found in one copy keeps its text as read.
    """
    merged: dict[str, str] = {}
    for raw in raws:
        for field, value in _decode_hash(raw).items():
            if field in merged:
                value = repr(_number(merged[field]) + _number(value))
            merged[field] = value
    return merged


def _le(bound: float) -> str:
    """Prometheus's spelling of a bucket bound (``1.0``, ``2.5``), as its Histogram does."""
    return repr(float(bound))


def histogram_buckets(
    raw: dict[str, str], bounds: tuple[float, ...]
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` pairs and the sum from a stored histogram hash."""
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for le in bounds:
        running += _number(raw.get(f"b:{le!r}", "0"))
        buckets.append((_le(le), running))
    running += _number(raw.get("b:+Inf", "0"))
    buckets.append(("+Inf", running))
    return buckets, _number(raw.get("sum", "0"))


def _counter(name: str, stored: dict[str, str]) -> CounterMetricFamily:
    """One counter family from its stored hash, seeded so a quiet label still shows 0."""
    spec = m.METRICS[name]
    seeded = _SEEDED.get(name, ((),) if not spec.labels else ())
    found: dict[tuple[str, ...], float] = {}
    for field, value in stored.items():
        labels = _labels(field, len(spec.labels))
        if labels is not None:
            found[tuple(labels)] = _number(value)
    values: dict[tuple[str, ...], float] = dict.fromkeys(seeded, 0.0)
    # Seeded label sets first, in their order; the others sorted, so the text does not
    # depend on the order the hash (or its shards) happened to store the fields in.
    for labels_tuple in sorted(found):
        values[labels_tuple] = found[labels_tuple]
    counter = CounterMetricFamily(name, spec.help, labels=list(spec.labels))
    for labels_tuple, number in values.items():
        counter.add_metric(list(labels_tuple), number)
    return counter


class RedisMetricsCollector(Collector):
    """Builds every ``nbq_*`` family from Redis on each scrape; never raises."""

    def __init__(
        self,
        store: redis.Redis,
        broker: redis.Redis | str,
        *,
        prefix: str = "nbq",
        clock: Callable[[], float] = time.time,
        shards: int = 0,
    ) -> None:
        self.store = store
        #: The broker's Redis, or a RabbitMQ URL (``amqp://``) read by passive declares.
        self.broker = broker
        self.prefix = prefix
        #: The job store's key layout (sharded on a cluster: indexes and every metric hash
        #: are read from every shard and summed).
        self.jobs = JobStore(store, prefix=prefix, shards=shards)
        self.clock = clock
        self.scrape_errors = 0  # reads that failed in this exporter process
        self._stored_errors = 0.0  # last value read; kept while Redis is unreachable

    def collect(self) -> Iterator[Metric]:
        up = 1.0
        for source in (self._from_store, self._from_broker):
            try:
                families = list(source())
            except Exception:  # a raising collector would fail the whole scrape
                self.scrape_errors += 1
                families = []
                if source == self._from_store or not isinstance(self.broker, str):
                    up = 0.0  # a Redis read failed (RabbitMQ down is not Redis down)
            yield from families
        yield GaugeMetricFamily(
            "nbq_metrics_redis_up", m.METRICS["nbq_metrics_redis_up"].help, value=up
        )
        yield CounterMetricFamily(
            "nbq_metrics_errors",
            m.METRICS["nbq_metrics_errors_total"].help,
            value=self._stored_errors + self.scrape_errors,
        )

    def _counter_keys(self, family: str) -> list[str]:
        """Every copy of a counter hash (one key unsharded; the unsharded one and each
        shard's when sharded). ``jobs_state``'s shard copies are the job store's own
        per-shard counters, named by the store: listed once even if the names agree."""
        keys = m.counter_keys(self.prefix, family, self.jobs.shards)
        if family == m.C_JOBS_STATE:
            keys = list(dict.fromkeys([*keys, *self.jobs.state_counter_keys()]))
        return keys

    def _from_store(self) -> Iterator[Metric]:
        """Every key in one pipeline: one round trip, one per node on a cluster."""
        shards = self.jobs.shards
        counters = {family: self._counter_keys(family) for _, family in _COUNTERS}
        histograms = {f: m.histogram_keys(self.prefix, f, shards) for _, f in _HISTOGRAMS}
        errors_keys = m.counter_keys(self.prefix, m.C_METRICS_ERRORS, shards)
        pipe = self.store.pipeline(transaction=False)
        for keys in (*counters.values(), *histograms.values()):
            for key in keys:
                pipe.hgetall(key)
        for state in ACTIVE_STATES:
            for key in self.jobs.index_keys(state):
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
        pipe.hget(breaker_key(self.prefix), "state")
        for key in errors_keys:
            pipe.hgetall(key)
        results = iter(pipe.execute())

        # The shards' copies of each hash, summed field by field (lists: read in order).
        hashes = {f: summed_hashes([next(results) for _ in keys]) for f, keys in counters.items()}
        stored = {f: summed_hashes([next(results) for _ in keys]) for f, keys in histograms.items()}
        for name, family in _COUNTERS:
            yield _counter(name, hashes[family])
        for name, key_family in _HISTOGRAMS:
            raw = stored[key_family]
            buckets, total = histogram_buckets(raw, m.HISTOGRAM_BUCKETS[key_family])
            hist = HistogramMetricFamily(name, m.METRICS[name].help, labels=[])
            hist.add_metric([], buckets, total)
            yield hist
        yield from self._job_gauges(results)

        breaker_state = next(results)
        is_open = breaker_state is not None and _text(breaker_state) == "open"
        yield GaugeMetricFamily(
            "nbq_quota_breaker_open",
            m.METRICS["nbq_quota_breaker_open"].help,
            value=1.0 if is_open else 0.0,
        )
        errors = summed_hashes([next(results) for _ in errors_keys])
        self._stored_errors = sum(_number(v) for v in errors.values())

    def _job_gauges(self, results: Iterator[Any]) -> Iterator[Metric]:
        """Jobs in each active state and the oldest one's age, from the index replies."""
        in_state = GaugeMetricFamily(
            "nbq_jobs_in_state", m.METRICS["nbq_jobs_in_state"].help, labels=["state"]
        )
        oldest = GaugeMetricFamily(
            "nbq_oldest_job_age_seconds",
            m.METRICS["nbq_oldest_job_age_seconds"].help,
            labels=["state"],
        )
        now = self.clock()
        for state in ACTIVE_STATES:
            count, first_at = 0.0, None
            for _ in self.jobs.index_keys(state):
                count += float(next(results))
                first = next(results)
                if first and (first_at is None or float(first[0][1]) < first_at):
                    first_at = float(first[0][1])
            in_state.add_metric([state.value], count)
            age = max(0.0, now - first_at) if first_at is not None else 0.0
            oldest.add_metric([state.value], age)
        yield in_state
        yield oldest

    def _from_broker(self) -> Iterator[Metric]:
        if isinstance(self.broker, str):
            yield self._lengths(amqp_queue_lengths(self.broker, ALL_QUEUES))
            return  # RabbitMQ's unacked counts need the management API: not exported
        waiting = queue_lengths(self.broker, ALL_QUEUES)
        unacked = self.broker.hlen(UNACKED_KEY)
        yield self._lengths(waiting)
        yield GaugeMetricFamily(
            "nbq_broker_unacked_messages",
            m.METRICS["nbq_broker_unacked_messages"].help,
            value=float(unacked),
        )

    @staticmethod
    def _lengths(waiting: dict[str, int]) -> Metric:
        lengths = GaugeMetricFamily(
            "nbq_queue_length", m.METRICS["nbq_queue_length"].help, labels=["queue"]
        )
        for queue in ALL_QUEUES:
            lengths.add_metric([queue], float(waiting[queue]))
        return lengths


def _client(settings: Settings, url: str) -> redis.Redis:
    return redis_client(settings, url, socket_timeout=5.0, socket_connect_timeout=5.0)


def build_registry(settings: Settings) -> CollectorRegistry:
    """A registry holding only the project collector (no process/platform metrics)."""
    store = _client(settings, settings.job_store_url)
    broker: redis.Redis | str = settings.broker_url  # amqp:// : read by passive declares
    if broker_kind(settings.broker_url) == "redis":  # plain Redis or Sentinel
        same = settings.broker_url == settings.job_store_url
        broker = store if same else _client(settings, settings.broker_url)
    registry = CollectorRegistry(auto_describe=False)
    shards = 0
    if is_cluster(store):
        # Too few shards would read too few metric copies and job indexes: refuse, as
        # every other process does (the count is fixed for a store's life).
        check_store_shards(store, settings)
        shards = settings.store_shards
    registry.register(
        RedisMetricsCollector(store, broker, prefix=settings.key_prefix, shards=shards)
    )
    return registry


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every 15 s would flood the log."""


def make_metrics_server(settings: Settings, *, address: str, port: int) -> WSGIServer:
    """The HTTP server (``/metrics``; any path answers) bound but not yet serving.

    Threaded, so a slow scrape (Redis timeout) does not block the next one.
    """
    app = make_wsgi_app(build_registry(settings))
    return make_server(
        address, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler
    )


class _TerminatedError(Exception):
    """SIGTERM arrived: leave ``serve_forever`` and close the socket."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _TerminatedError


def serve_metrics(settings: Settings, *, address: str, port: int) -> None:
    """Serve the metrics over HTTP until SIGTERM or Ctrl-C (blocking; ``nbq metrics``)."""
    server = make_metrics_server(settings, address=address, port=port)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stop)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, _TerminatedError):
        pass
    finally:
        server.server_close()
