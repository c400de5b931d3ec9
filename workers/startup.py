"""What a process does once when it starts a worker (or a producer), never at import.

Importing ``workers.app`` or ``producers`` changes nothing in the importing process: no
logging configuration, no kombu patch, no Celery signal receivers. They happen here:

- :class:`WorkerLoader` is the Celery app's loader; Celery calls its ``on_worker_init``
  in the worker's main process before ``worker_init`` and before any child forks, so
  ``celery -A workers.app worker`` and ``nbq worker`` both get logging, the kombu fix,
  the bounded warm shutdown, the store guard and the probes' heartbeat.
- :func:`configure_process` is called explicitly by the CLI commands that run other
  parts (Flower, metrics, reconcile) and by :class:`producers.Producer` (its warnings go
  to stderr, never into a command's ``--json`` output).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from celery.loaders.app import AppLoader
from celery.signals import celeryd_after_setup

from nanobanana_queue.workers.settings import Settings, get_settings

_configured = False
#: The traces' ``service.name`` unless ``OTEL_SERVICE_NAME`` says otherwise.
SERVICE_NAME = "nanobanana-queue"


def configure_process(settings: Settings | None = None, *, keep_host_logging: bool = False) -> None:
    """Structured logs to stderr with every configured secret redacted, and the kombu fix.

    Once per process: a second call (a second Producer) changes nothing. With
    ``keep_host_logging`` (``Producer()``), a process that configured structlog itself
    keeps its configuration: an embedding service's logging is its own. The secrets are
    still registered, for ``workers.logs.redact_processor`` in the host's chain.
    """
    global _configured
    if _configured:
        return
    _configured = True
    import structlog

    settings = settings or get_settings()
    if keep_host_logging and structlog.is_configured():
        register_secrets(settings)
    else:
        # A Producer in a host's process leaves the host's stdlib logging alone.
        configure_logging(settings, stdlib=not keep_host_logging)
    patch_kombu()
    from nanobanana_queue.workers import tracing

    tracing.configure_tracing(settings, SERVICE_NAME)  # off unless OTEL_* configures it


def configure_logging(settings: Settings, *, stdlib: bool = True) -> None:
    """Logs to stderr at ``NBQ_LOG_LEVEL`` in one format (``workers.logs``); every secret in
    the settings redacted."""
    from nanobanana_queue.workers.logs import configure_logging as configure_structlog

    configure_structlog(settings.log_level, json=settings.log_json, stdlib=stdlib)
    register_secrets(settings)


def register_secrets(settings: Settings) -> None:
    """Every secret the settings hold, known to the log redaction."""
    from nanobanana_queue.workers.logs import register_secret

    for secret in (
        settings.evolink_api_key,
        settings.s3_secret_key,
        settings.s3_access_key,
        settings.flower_basic_auth,
        settings.ingress_tokens,
        settings.callback_secret,
        settings.producer_secret,
        settings.redis_password,
        settings.redis_sentinel_password,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())
    if settings.ingress_tokens is not None:  # "producer:token,...": each token on its own
        for item in settings.ingress_tokens.get_secret_value().split(","):
            register_secret(item.partition(":")[2].strip())
    api_url = settings.broker_api_url.get_secret_value() if settings.broker_api_url else None
    for url in (settings.broker_url, settings.redis_url, api_url):
        for part in (url or "").split(";"):  # sentinel://:pass@h1;sentinel://h2
            register_secret(urlsplit(part).password if part else None)  # redis://:pass@host


def patch_kombu() -> None:
    """The kombu fixes (Redis transport): survive a broker restart, acks without MULTI,
    and a queue item that is not a kombu message is a dead letter, not a dead worker."""
    from nanobanana_queue.workers.guard import redis_transport

    _closed_broker_channel_is_a_connection_error()
    _unacked_bookkeeping_without_multi()
    redis_transport.install()


def _closed_broker_channel_is_a_connection_error() -> None:
    """Let a worker survive a broker restart (celery 5.7 / kombu 5.7, Redis transport).

    After ``collect()`` the consumer closes the broken connection; the channel then restores
    unacked messages (there always are some: countdown polls) through a client it no longer
    has (AttributeError in ``Channel._connparams``), which escapes ``ignore_errors`` and
    kills the consumer; late-ack tasks acking after the reconnect hit it too. Raised as a
    connection error it is handled like any other: the worker reconnects and the reconciler
    re-drives whatever was in flight.
    """
    import redis
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel._connparams
    if getattr(original, "nbq_patched", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("broker channel closed after a lost connection")
        return original(self, asynchronous=asynchronous)  # type: ignore[no-untyped-call]

    _connparams.nbq_patched = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]


def _unacked_bookkeeping_without_multi() -> None:
    """kombu's ack emulation (Redis transport) in plain pipelines, not MULTI/EXEC.

    Every delivery writes the message to the ``unacked`` hash and its time to
    ``unacked_index`` (``QoS.append``); every ack or reject removes both
    (``QoS._remove_from_indices``). kombu sends each pair in a transaction: 2 of its 4
    commands are MULTI and EXEC, 12 Redis commands per job for the three stages. The
    transaction adds nothing to redelivery: the message left its queue (BRPOP) before
    ``append``, so a pair cut in half by a lost connection loses or keeps the message
    exactly as an aborted EXEC would, and ``restore_visible`` only restores index entries
    older than the visibility timeout (never one being written) and skips an index entry
    without its hash entry. Order is kept: index then hash on append, index then hash on
    ack (a half-done ack leaves a hash entry no sweep restores, not a second delivery).
    ``restore_by_tag`` passes its own (transactional, WATCHed) pipeline: unchanged.
    """
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.QoS.pipe_or_acquire
    if getattr(original, "nbq_patched", False):
        return

    @contextmanager
    def pipe_or_acquire(self: Any, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        if pipe:
            yield pipe
        else:
            with self.channel.conn_or_acquire(client) as acquired:
                yield acquired.pipeline(transaction=False)

    pipe_or_acquire.nbq_patched = True  # type: ignore[attr-defined]
    kombu_redis.QoS.pipe_or_acquire = pipe_or_acquire  # type: ignore[method-assign]


def start_worker() -> None:
    """The worker main process's start: logging, kombu fix, shutdown deadline, store guard."""
    from nanobanana_queue.workers import metrics, shutdown, store_guard
    from nanobanana_queue.workers.settings import get_settings

    configure_process()
    keep_celery_in_our_log_format()
    # Before the pool forks: every child inherits the window (and starts its own flusher).
    metrics.set_flush_window(get_settings().metrics_flush_s)
    shutdown.install()
    store_guard.install()


def _no_cancel_on_connection_loss_without_kill(instance: Any = None, **_: Any) -> None:
    """A pool that cannot kill a job (``threads``, ``solo``) does not try to.

    With ``worker_cancel_long_running_tasks_on_connection_loss`` Celery cancels running
    late-ack tasks after a lost broker connection through ``pool.terminate_job``, which
    a thread pool does not implement: "Failed to cancel active request …
    NotImplementedError: TaskPool does not implement kill_job", one traceback per task.
    The tasks run on either way and their late-ack messages come back (the reconciler's
    lease pass puts back what the lost channel held); every late-ack stage is safe to run
    twice. So on such pools the setting is off, and so is Celery's reminder that it will
    default to on in 6.0 (``warnings 'always'`` would print it after every reconnect).
    Prefork kills its children as before.
    """
    import warnings

    from celery.concurrency.solo import TaskPool as SoloPool
    from celery.concurrency.thread import TaskPool as ThreadPool

    # Prefork sets ``terminate_job`` per instance at start, eventlet and gevent define it:
    # only these two inherit BasePool's NotImplementedError.
    pool_cls = getattr(instance, "pool_cls", None)
    if not isinstance(pool_cls, type) or not issubclass(pool_cls, ThreadPool | SoloPool):
        return
    instance.app.conf.worker_cancel_long_running_tasks_on_connection_loss = False
    warnings.filterwarnings(
        "ignore", message=r"\s*In Celery 5\.1 we introduced an optional breaking change"
    )


def keep_celery_in_our_log_format() -> None:
    """Celery's and kombu's records go through the root handler ``configure_process``
    installed (``workers.logs``), not through a handler and format of Celery's own.

    A receiver of ``setup_logging`` tells Celery the logging is configured; its loggers
    still follow ``--loglevel``. In JSON mode (NBQ_LOG_JSON) the banner Celery prints to
    stdout becomes one ``worker_started`` event, and whatever else is printed to stdout is
    logged (``celery.redirected``), so every line the worker writes is a JSON object.
    """
    from celery import signals

    signals.setup_logging.connect(_celery_loggers_follow_loglevel, weak=False)
    signals.celeryd_after_setup.connect(_banner_as_an_event, weak=False)
    signals.worker_process_shutdown.connect(_flush_traces, weak=False)
    signals.worker_shutdown.connect(_flush_metrics, weak=False)


def _flush_traces(**_: Any) -> None:
    """A pool child exits without atexit: export its buffered spans (and its held metric
    events, NBQ_METRICS_FLUSH_S) first."""
    from nanobanana_queue.workers import metrics, tracing

    tracing.flush()
    metrics.flush()


def _flush_metrics(**_: Any) -> None:
    """The worker stops (a threads or solo pool runs the tasks in this process): write
    its held metric events (NBQ_METRICS_FLUSH_S)."""
    from nanobanana_queue.workers import metrics

    metrics.flush()


def _celery_loggers_follow_loglevel(loglevel: int | None = None, **_: Any) -> None:
    import logging

    for name in ("celery", "kombu"):
        logging.getLogger(name).setLevel(loglevel or logging.INFO)


def _banner_as_an_event(sender: str, instance: Any, **_: Any) -> None:
    import logging

    import celery

    from nanobanana_queue.workers.logs import get_logger

    if not get_settings().log_json:
        return  # the console keeps Celery's banner
    instance.quiet = True  # read by Celery right after this signal
    get_logger("nanobanana_queue.workers.startup").info(
        "worker_started",
        hostname=sender,
        queues=sorted(instance.app.amqp.queues.consume_from),
        concurrency=instance.concurrency,
        celery=celery.__version__,
    )
    instance.app.log.redirect_stdouts_to_logger(
        logging.getLogger("celery.redirected"), loglevel=logging.WARNING, stderr=False
    )
    from celery.apps import worker as celery_worker

    if hasattr(celery_worker, "safe_say"):
        celery_worker.safe_say = say_as_json


def say_as_json(msg: str, f: Any = None) -> None:
    """Celery's ``safe_say`` in JSON mode: the lines its signal handlers write (``worker:
    Warm shutdown (MainProcess)``) as JSON objects, written as Celery writes them, with one
    ``os.write`` (no logging lock taken inside a signal handler)."""
    import contextlib
    import json
    import os
    import sys
    from datetime import UTC, datetime

    stream: Any = f if f is not None else sys.__stderr__
    line = json.dumps(
        {
            "event": str(msg).strip(),
            "level": "info",
            "logger": "celery.apps.worker",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
    )
    # As Celery's: losing the line must never abort a shutdown.
    with contextlib.suppress(AttributeError, OSError, ValueError):
        os.write(stream.fileno(), f"{line}\n".encode())


class WorkerLoader(AppLoader):  # type: ignore[misc]
    """Celery's app loader plus this project's worker start (Celery calls ``init_worker``
    first thing in ``WorkController``, before ``worker_init`` is sent)."""

    def on_worker_init(self) -> None:
        from nanobanana_queue.workers import heartbeat, lease_step

        start_worker()
        heartbeat.install(self.app)  # the probes' heartbeat (workers/probes.py)
        lease_step.install(self.app)  # the worker's lease (workers/leases.py)
        celeryd_after_setup.connect(_no_cancel_on_connection_loss_without_kill, weak=False)
        super().on_worker_init()
