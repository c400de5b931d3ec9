"""Project metrics: shared counters in Redis, written by every worker process.

Workers run as many processes on many hosts, so per-process prometheus counters would
need one scrape target per process. Instead each event is one pipelined ``HINCRBY`` /
``HINCRBYFLOAT`` on the job store's Redis, under ``<prefix>:metrics:...``; the exporter
(``workers/metrics_exporter.py``, run by ``nbq metrics``) reads them back as one scrape
target with fleet-wide totals. A worker process holds its tasks' events up to
``NBQ_METRICS_FLUSH_S`` (default 1 s) and writes them merged (``_Pending``); every other
process writes each batch at its end. See docs/operations.md ("Metrics design").

Key layout (every value a Redis hash):

- ``<prefix>:metrics:c:<family>``: field = JSON list of label values, value = count.
- ``<prefix>:metrics:h:<family>``: fields ``b:<le>`` (non-cumulative bucket counts,
  ``b:+Inf`` for the overflow) and ``sum``; the count is the buckets' total (the
  exporter adds them up), so an observation costs two increments, not three.

Sharded store (Redis Cluster, ``NBQ_STORE_SHARDS``): one hash per family would be one hot
slot (``metrics:c:api_calls`` alone ≈ 14,000 commands/s at 100M jobs/day), so each family
has a copy per shard, ``<prefix>:{s<n>}:metrics:...`` (the job store's shard tags: the
state counter its scripts keep is the ``jobs_state`` copy). Each flush writes all its
events into one shard's copies (one slot, so one node and one round trip), the next flush
of the process into the next shard: every process rotates over all the shards from a
random start, so the load spreads evenly whatever the number of processes. Every field is
a plain sum (histogram buckets are non-cumulative), so the exporter adds the copies field
by field and exports exactly what one hash would hold. On a single Redis (no shards) the
keys are the unsharded ones above, as always.

The hooks never raise: a failed write is counted locally and added to
``nbq_metrics_errors_total`` with the next write that succeeds.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import redis

#: Upper bounds (``le``) of the histogram buckets; ``+Inf`` is implicit.
POLLS_BUCKETS: Final = (1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0)
ENQUEUE_TO_STORED_BUCKETS_S: Final = (
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
    90.0,
    120.0,
    180.0,
    300.0,
    600.0,
    1200.0,
    3600.0,
)
#: The ingress's answer times: a few ms for a status read, up to the enqueue of a batch.
HTTP_SECONDS_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Family names used in Redis keys (without the ``nbq_`` prefix).
C_JOBS_STATE: Final = "jobs_state"
C_JOBS_FAILED: Final = "jobs_failed"
C_API_CALLS: Final = "api_calls"
C_BYTES_STORED: Final = "bytes_stored"
C_CREDITS_RESERVED: Final = "credits_reserved"
C_LIMITER_WAITS: Final = "limiter_waits"
C_FAIR_SHARE: Final = "fair_share"
C_PRODUCER_CREATES: Final = "producer_creates"
C_BREAKER_TRANSITIONS: Final = "quota_breaker_transitions"
C_METRICS_ERRORS: Final = "metrics_errors"
C_DEAD_LETTERS: Final = "dead_letters"
C_STORE_RESETS: Final = "store_resets"
C_DEAD_LETTERS_DROPPED: Final = "dead_letters_dropped"
C_JOBS_RESCUED: Final = "jobs_rescued"
C_JOBS_LOST: Final = "jobs_lost"
C_OWNERSHIP_REFUSED: Final = "ownership_refused"
C_NOTIFICATIONS: Final = "notifications"
H_POLLS_PER_JOB: Final = "polls_per_job"
H_ENQUEUE_TO_STORED: Final = "enqueue_to_stored_seconds"
#: Per producer (label: a configured producer or ``other``); fields ``<label json>|b:<le>``.
H_PRODUCER_ENQUEUE_TO_STORED: Final = "producer_enqueue_to_stored_seconds"
C_HTTP_REQUESTS: Final = "http_requests"
H_HTTP_SECONDS: Final = "http_request_duration_seconds"

HISTOGRAM_BUCKETS: Final[dict[str, tuple[float, ...]]] = {
    H_POLLS_PER_JOB: POLLS_BUCKETS,
    H_ENQUEUE_TO_STORED: ENQUEUE_TO_STORED_BUCKETS_S,
    H_PRODUCER_ENQUEUE_TO_STORED: ENQUEUE_TO_STORED_BUCKETS_S,
    H_HTTP_SECONDS: HTTP_SECONDS_BUCKETS,
}

#: Longest label value kept; longer values (unexpected codes) are cut to bound cardinality.
MAX_LABEL_CHARS: Final = 64


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its prometheus type, label names and help text."""

    kind: str  # "counter" | "gauge" | "histogram"
    labels: tuple[str, ...]
    help: str


#: Every metric ``nbq metrics`` exports (the alert and dashboard tests check against it).
METRICS: Final[dict[str, MetricSpec]] = {
    "nbq_jobs_state_total": MetricSpec("counter", ("state",), "Entries of jobs into each state."),
    "nbq_jobs_in_state": MetricSpec("gauge", ("state",), "Jobs currently in each active state."),
    "nbq_oldest_job_age_seconds": MetricSpec(
        "gauge",
        ("state",),
        "Seconds since the least recently updated job in this state "
        "was last updated (0 when the state is empty).",
    ),
    "nbq_jobs_failed_total": MetricSpec("counter", ("reason",), "Jobs that ended failed."),
    "nbq_api_calls_total": MetricSpec(
        "counter", ("endpoint", "status", "code"), "Evolink API calls by outcome."
    ),
    "nbq_polls_per_job": MetricSpec("histogram", (), "Status queries per generated job."),
    "nbq_enqueue_to_stored_seconds": MetricSpec(
        "histogram", (), "Seconds from enqueue to results stored in S3."
    ),
    "nbq_bytes_stored_total": MetricSpec("counter", (), "Bytes written to S3."),
    "nbq_credits_reserved_total": MetricSpec("counter", (), "Credits reserved by creates."),
    "nbq_quota_breaker_open": MetricSpec(
        "gauge", (), "1 while the submissions (quota) breaker is open."
    ),
    "nbq_quota_breaker_transitions_total": MetricSpec(
        "counter", ("to",), "Times the quota breaker opened or closed."
    ),
    "nbq_limiter_waits_total": MetricSpec(
        "counter", ("kind",), "Times a stage waited for a shared limiter token."
    ),
    "nbq_producer_creates_total": MetricSpec(
        "counter",
        ("producer",),
        "Creates claimed per producer (configured producers, else 'other'): its share.",
    ),
    "nbq_producer_jobs_waiting": MetricSpec(
        "gauge",
        ("producer",),
        "Jobs on a producer's fair-share waiting list (configured producers, else 'other').",
    ),
    "nbq_producer_enqueue_to_stored_seconds": MetricSpec(
        "histogram",
        ("producer",),
        "Seconds from enqueue to stored, per producer (configured producers, else 'other').",
    ),
    "nbq_fair_share_total": MetricSpec(
        "counter",
        ("producer", "outcome"),
        "Fair-share takes per submit slot's producer (the configured ones, else 'other'): "
        "pick (a waiting job taken), direct (a queued job on no list), capped, empty.",
    ),
    "nbq_queue_length": MetricSpec("gauge", ("queue",), "Messages waiting in a Celery queue."),
    "nbq_broker_unacked_messages": MetricSpec(
        "gauge", (), "Messages delivered to workers but not yet acknowledged (incl. countdowns)."
    ),
    "nbq_dead_letters_total": MetricSpec(
        "counter",
        ("queue", "reason"),
        "Broker messages refused by the consumer guard into the dead-letter store.",
    ),
    "nbq_dead_letters_dropped_total": MetricSpec(
        "counter",
        (),
        "Dead letters removed to keep the store within NBQ_DEAD_LETTER_MAX(_BYTES).",
    ),
    "nbq_metrics_errors_total": MetricSpec(
        "counter", (), "Metric writes or reads that failed (the metric itself may be low)."
    ),
    "nbq_store_resets_total": MetricSpec(
        "counter", (), "Times the job store lost its epoch marker (flush, empty failover)."
    ),
    "nbq_jobs_rescued_total": MetricSpec(
        "counter",
        ("via",),
        "Jobs whose record had vanished, finished from the task id in a message.",
    ),
    "nbq_jobs_lost_total": MetricSpec(
        "counter",
        ("stage",),
        "Messages for jobs whose record had vanished and that could not be rescued.",
    ),
    "nbq_ownership_refused_total": MetricSpec(
        "counter",
        ("entry", "reason"),
        "Claims refused because a task or a producer id was not the claimant's.",
    ),
    "nbq_notifications_total": MetricSpec(
        "counter",
        ("event", "outcome"),
        "Completion-webhook delivery tries by event and outcome "
        "(delivered, retried, dead, gone, refused).",
    ),
    "nbq_http_requests_total": MetricSpec(
        "counter",
        ("method", "route", "status"),
        "Requests the HTTP ingress answered, by route template and status.",
    ),
    "nbq_http_request_duration_seconds": MetricSpec(
        "histogram", (), "Seconds the HTTP ingress took to answer a request."
    ),
    "nbq_metrics_redis_up": MetricSpec(
        "gauge", (), "1 if the exporter could read the metrics from Redis on this scrape."
    ),
}


def series_names() -> frozenset[str]:
    """Every sample name the exporter can emit (with ``_bucket/_sum/_count`` suffixes)."""
    names: set[str] = set()
    for name, spec in METRICS.items():
        names.add(name)
        if spec.kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return frozenset(names)


def space(prefix: str, shard: int | None = None) -> str:
    """Key prefix of a metric hash copy: ``nbq`` (unsharded) or shard ``n``'s ``nbq:{sn}``
    (the job store's shard tag, ``JobStore._space``)."""
    return prefix if shard is None else f"{prefix}:{{s{shard}}}"


def counter_key(prefix: str, family: str, shard: int | None = None) -> str:
    return f"{space(prefix, shard)}:metrics:c:{family}"


def histogram_key(prefix: str, family: str, shard: int | None = None) -> str:
    return f"{space(prefix, shard)}:metrics:h:{family}"


def counter_keys(prefix: str, family: str, shards: int) -> list[str]:
    """Every copy of a counter hash, to be summed: the unsharded one, then (sharded) each
    shard's. The unsharded key stays in the list on a sharded store: written by processes
    of an earlier version, it keeps the totals from going down on an upgrade."""
    return [counter_key(prefix, family)] + [counter_key(prefix, family, n) for n in range(shards)]


def histogram_keys(prefix: str, family: str, shards: int) -> list[str]:
    """Every copy of a histogram hash, to be summed field by field (as ``counter_keys``)."""
    return [histogram_key(prefix, family)] + [
        histogram_key(prefix, family, n) for n in range(shards)
    ]


def label_field(*values: object) -> str:
    """Hash field for a label-value tuple (JSON, so any character is safe)."""
    return json.dumps([str(v)[:MAX_LABEL_CHARS] for v in values], separators=(",", ":"))


def bucket_field(value: float, buckets: tuple[float, ...]) -> str:
    """The ``b:<le>`` field of the first bucket that holds ``value``."""
    for le in buckets:
        if value <= le:
            return f"b:{le!r}"
    return "b:+Inf"


# -- the per-process writer ---------------------------------------------------------


class _Writer:
    """One Redis client per process, re-created after fork; errors counted, never raised."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._client: redis.Redis | None = None
        self._prefix = "nbq"
        self._shards = 0
        self._next_shard = 0
        self.pending_errors = 0  # failed writes not yet added to the shared counter
        self.enabled = True
        #: Shard count forced by ``set_shards`` (``None``: the store's, see ``_connect``).
        self.shards_override: int | None = None

    def _connect(self) -> tuple[redis.Redis, str]:
        with self._lock:
            pid = os.getpid()
            if self._client is None or self._pid != pid:
                from nanobanana_queue.workers.settings import get_settings

                if self._pid not in (0, pid):
                    self.pending_errors = 0  # the parent reports its own errors
                settings = get_settings()
                from nanobanana_queue.workers.redis_client import is_cluster, redis_client

                self._client = redis_client(
                    settings, socket_timeout=1.0, socket_connect_timeout=1.0
                )
                self._prefix = settings.key_prefix
                # The job store's layout (workers/runtime.py): sharded on a cluster only.
                shards = settings.store_shards if is_cluster(self._client) else 0
                if self.shards_override is not None:
                    shards = self.shards_override
                self._shards = shards
                # A random start per process (``random`` is re-seeded in a forked child),
                # so processes started together do not write the same shard in step.
                self._next_shard = random.randrange(shards) if shards else 0
                self._pid = pid
            return self._client, self._prefix

    def _space(self, prefix: str) -> str:
        """Where this flush writes: the unsharded keys, or the next shard's copies."""
        with self._lock:
            if not self._shards:
                return space(prefix)
            shard = self._next_shard % self._shards
            self._next_shard = shard + 1
        return space(prefix, shard)

    def reset(self) -> None:
        """Forget the client (tests; or after settings change)."""
        with self._lock:
            self._client = None
            self._pid = 0
            self._shards = 0
            self.pending_errors = 0

    def error(self) -> None:
        with self._lock:
            self.pending_errors += 1

    def write(self, ops: list[tuple[str, str, float]]) -> None:
        """Apply ``(key_suffix, field, amount)`` increments in one round trip.

        Integral amounts use ``HINCRBY``; fields that may hold fractions (sums, credits)
        must always be written with a float amount, so they use ``HINCRBYFLOAT``.
        Increments of the same field are added up first: one command each. Sharded, all
        of them go to one shard's copies (``_space``), so one slot and one round trip.
        """
        if not self.enabled:
            return
        ops = _merged(ops)
        errors = 0
        try:
            client, prefix = self._connect()
            where = self._space(prefix)
            pipe = client.pipeline(transaction=False)
            for key_suffix, field, amount in ops:
                key = f"{where}:metrics:{key_suffix}"
                if isinstance(amount, float):
                    pipe.hincrbyfloat(key, field, amount)
                else:
                    pipe.hincrby(key, field, amount)
            with self._lock:
                errors, self.pending_errors = self.pending_errors, 0
            if errors:
                pipe.hincrby(f"{where}:metrics:c:{C_METRICS_ERRORS}", label_field(), errors)
            pipe.execute()
        except Exception:  # metrics must never break a stage
            with self._lock:
                self.pending_errors += errors + 1


def _merged(ops: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    """Same key, field and kind (int or float) -> one op with the summed amount."""
    totals: dict[tuple[str, str, bool], float] = {}
    for key_suffix, field, amount in ops:
        slot = (key_suffix, field, isinstance(amount, float))
        totals[slot] = totals.get(slot, 0) + amount
    return [(key, field, amount) for (key, field, _), amount in totals.items()]


_writer = _Writer()
_batch = threading.local()


def _emit(ops: list[tuple[str, str, float]]) -> None:
    pending: list[tuple[str, str, float]] | None = getattr(_batch, "ops", None)
    if pending is not None:
        pending.extend(ops)
    else:
        _pending.add(ops)


@contextmanager
def batched() -> Iterator[None]:
    """Collect this thread's metric events and write them in one round trip at the end.

    Each Celery task runs inside one batch (``workers/tasks/base.py``), so a stage's
    metrics cost one Redis round trip instead of one per event. Nested batches join the
    outer one. The write happens even when the block raises.
    """
    if getattr(_batch, "ops", None) is not None:
        yield
        return
    _batch.ops = []
    try:
        yield
    finally:
        ops, _batch.ops = _batch.ops, None
        if ops:
            _pending.add(ops)


class _Pending:
    """Batches of this process held for up to ``window_s`` and written as one (the
    window is ``set_flush_window``: a worker sets NBQ_METRICS_FLUSH_S, default 1 s, at
    its start; in any other process it stays 0: each batch is written at its end).

    Why: each task's batch is a round trip of 3-4 increments, and the fields repeat from
    job to job (``api_calls`` by status, one bucket of each histogram), so the batches of
    a busy process merged over a second are a handful of commands in all, not ~18 per job
    (benchmarks/redis_commands.py). What it costs: the finished tasks' events a SIGKILL
    (OOM, a hard time limit) takes with the process, at most one window of them, are not
    counted (with no window a SIGKILL still loses the running tasks' events). A pool
    child's shutdown (``worker_process_shutdown``, workers/startup.py), the worker's, the
    bounded warm shutdown's forced exit (workers/shutdown.py) and an interpreter's exit
    write what is held. A daemon thread writes a batch that no later batch pushed out
    within the window (an idle process).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.window_s = 0.0
        self._ops: list[tuple[str, str, float]] = []
        self._since = 0.0
        self._pid = 0
        self._wake = threading.Event()
        self._exit_hook = False

    def after_fork_in_child(self) -> None:
        """A forked child (a pool child, a replacement after max-tasks-per-child) starts
        empty: what the parent held is the parent's to write (a copy would be counted
        twice), and a lock held by a parent's thread at the fork is never released."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ops = []
        self._pid = 0

    def add(self, ops: list[tuple[str, str, float]]) -> None:
        if self.window_s <= 0:
            _writer.write(ops)
            return
        now = time.monotonic()
        with self._lock:
            if not self._ops:
                self._since = now
            self._ops.extend(ops)
            due = now - self._since >= self.window_s
            self._start_flusher()
        if due:
            self.flush()

    def flush(self) -> None:
        """Write what is held now (one round trip); nothing held, nothing sent."""
        with self._lock:
            ops, self._ops = self._ops, []
        if ops:
            _writer.write(ops)

    def _start_flusher(self) -> None:
        """One daemon thread per process (threads do not survive a fork: a pool child
        starts its own with its first held batch). Called with the lock held."""
        pid = os.getpid()
        if self._pid == pid:
            return
        if not self._exit_hook:
            atexit.register(self.flush)  # once: a forked child inherits it
            self._exit_hook = True
        self._pid = pid
        threading.Thread(target=self._run, name="nbq-metrics-flush", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._lock:
                window = self.window_s
                left = window - (time.monotonic() - self._since) if self._ops else window
            # Woken early by ``set_flush_window``; with no window it only waits for one.
            self._wake.wait(left if window > 0 else None)
            self._wake.clear()
            with self._lock:
                held = bool(self._ops)
                due = held and time.monotonic() - self._since >= self.window_s
            if due or (held and self.window_s <= 0):
                self.flush()


_pending = _Pending()
os.register_at_fork(after_in_child=_pending.after_fork_in_child)


def flush() -> None:
    """Write this process's held metric events now (a pool child's or a worker's
    shutdown, workers/startup.py; tests)."""
    _pending.flush()


def holding() -> bool:
    """Whether this process holds its events (a window is set and recording is on): then
    the job store hands it the moves' state counts (workers/runtime.py)."""
    return _pending.window_s > 0 and _writer.enabled


def set_flush_window(seconds: float) -> None:
    """Hold this process's task batches for up to ``seconds`` and write them merged
    (a worker's NBQ_METRICS_FLUSH_S, default 1; 0 = at the end of each batch). Lowering it
    to 0 writes what is held."""
    _pending.window_s = max(float(seconds), 0.0)
    _pending._wake.set()  # a flusher waiting out the old window looks again
    if _pending.window_s <= 0:
        _pending.flush()


def reset() -> None:
    """Drop this process's metrics client (next event reconnects with fresh settings)."""
    _writer.reset()


def set_enabled(enabled: bool) -> None:
    """Turn recording on or off in this process (tests turn it off so that in-process
    stages never write to whatever Redis the default settings name)."""
    _writer.enabled = enabled


def set_shards(shards: int | None) -> None:
    """Write per-shard copies over ``shards`` shards whatever the store is (tests of the
    sharded layout on one redis-server); ``None``, the default: the store's layout
    (``NBQ_STORE_SHARDS`` on a Redis Cluster, unsharded otherwise). Drops the client (the
    next event reconnects)."""
    _writer.shards_override = shards
    _writer.reset()


def pending_errors() -> int:
    """Failed writes in this process not yet added to ``nbq_metrics_errors_total``."""
    return _writer.pending_errors


def _count(family: str, *labels: object, amount: int | float = 1) -> None:
    _emit([(f"c:{family}", label_field(*labels), amount)])


def _observe(family: str, value: float, *labels: object) -> None:
    """One observation of a histogram; with ``labels``, its fields are prefixed by them
    (``<label>|<bucket>``, ``<label>|sum``)."""
    try:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("observation must be finite")
        field = bucket_field(value, HISTOGRAM_BUCKETS[family])
    except Exception:  # bad input is a counted error, not a crash
        _writer.error()
        return
    prefix = f"{label_field(*labels)}|" if labels else ""
    key_suffix = f"h:{family}"
    _emit([(key_suffix, prefix + field, 1), (key_suffix, prefix + "sum", value)])


# -- hooks called by the pipeline stages (names and signatures are a promise) ----------


def api_call(endpoint: str, status: int | str, code: str = "") -> None:
    """One Evolink API call: endpoint create|query|file, HTTP status (or 'error'), code."""
    _count(C_API_CALLS, endpoint, status, code or "")


def job_state(state: str) -> None:
    """A job entered ``state``. The job store counts its own transitions in the same hash
    (``JobStore.state_counter_key``; sharded, the shard copies are the store's per-shard
    counters); this hook is for entries made outside the store."""
    _count(C_JOBS_STATE, getattr(state, "value", state))


def job_failed(reason: str) -> None:
    """A job ended failed with ``reason`` (the job error code)."""
    _count(C_JOBS_FAILED, reason or "unknown")


def polls_per_job(polls: int) -> None:
    """Observed once per job when it leaves generating."""
    _observe(H_POLLS_PER_JOB, polls)


def enqueue_to_stored(seconds: float) -> None:
    """Observed once per stored job."""
    _observe(H_ENQUEUE_TO_STORED, seconds)


def bytes_stored(n: int) -> None:
    """Bytes written to S3."""
    try:
        amount = int(n)
    except Exception:  # never raise from a metric hook
        _writer.error()
        return
    _count(C_BYTES_STORED, amount=amount)


def credits_reserved(credits: float) -> None:
    """Credits reserved by a create."""
    try:
        amount = float(credits)
    except Exception:  # never raise from a metric hook
        _writer.error()
        return
    _count(C_CREDITS_RESERVED, amount=amount)


def quota_breaker(open_: bool) -> None:
    """The quota breaker opened (True) or closed (False).

    Only the transition is counted here; ``nbq_quota_breaker_open`` is read by the
    exporter from the breaker's own hash, so it is right even if this write was lost.
    """
    _count(C_BREAKER_TRANSITIONS, "open" if open_ else "closed")


def limiter_wait(kind: str) -> None:
    """A stage had to wait for a token of the shared limiter (create|query|inflight)."""
    _count(C_LIMITER_WAITS, kind)


def producer_create(producer: str) -> None:
    """A job of ``producer`` claimed its create (a bounded label: a configured producer or
    ``other``)."""
    _count(C_PRODUCER_CREATES, producer)


def producer_enqueue_to_stored(producer: str, seconds: float) -> None:
    """A job of ``producer`` (bounded label) was stored ``seconds`` after its enqueue."""
    _observe(H_PRODUCER_ENQUEUE_TO_STORED, seconds, producer)


def fair_share(producer: str, outcome: str) -> None:
    """The fair-share gate's answer for a job of ``producer`` (a bounded label: the caller
    passes a configured producer or ``other``)."""
    _count(C_FAIR_SHARE, producer, outcome)


def dead_letter(queue: str, reason: str) -> None:
    """The consumer guard refused a message from ``queue`` for ``reason``."""
    _count(C_DEAD_LETTERS, queue or "?", reason or "unknown")


def dead_letters_dropped(count: int) -> None:
    """The dead-letter store dropped ``count`` letters to stay within its bounds."""
    _count(C_DEAD_LETTERS_DROPPED, amount=count)


def store_reset() -> None:
    """The job store lost its epoch marker (counted once, by the process re-creating it)."""
    _count(C_STORE_RESETS)


def job_rescued(via: str) -> None:
    """A job whose record had vanished was re-recorded from a message (poll|download|...)."""
    _count(C_JOBS_RESCUED, via)


def ownership_refused(entry: str, reason: str) -> None:
    """A task claim (callback, adopt, rescue) or a producer claim (raw nbq.generate) was
    refused: ``entry`` names where it came in, ``reason`` why (foreign_task, ...)."""
    _count(C_OWNERSHIP_REFUSED, entry or "?", reason or "unknown")


def job_lost(stage: str) -> None:
    """A message found its job's record gone and carried nothing to finish it with."""
    _count(C_JOBS_LOST, stage)


def notification(event: str, outcome: str) -> None:
    """A webhook delivery try ended: delivered, retried, dead (out of tries), gone, refused."""
    _count(C_NOTIFICATIONS, event or "?", outcome)


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """One request the ingress answered: ``route`` is the route's template
    (``/v1/jobs/{job_id}``), never the path a client sent (bounded cardinality)."""
    with batched():  # the count and the observation in one round trip
        _count(C_HTTP_REQUESTS, method, route, status)
        _observe(H_HTTP_SECONDS, seconds)
