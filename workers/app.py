"""The Celery application: ``celery -A workers.app worker -Q submit`` works as is.

Settings chosen for safety (see docs/failure-handling.md):
- JSON only; prefetch 1; events on so Flower sees every task.
- Late ack + reject on worker lost for the idempotent stages (poll, download); the paid
  submit acks early and relies on the job state machine instead of redelivery.
- ``visibility_timeout`` far above any countdown (poll hops are capped at
  NBQ_POLL_MAX_INTERVAL_S) plus the longest task time limit.
- A bounded ``worker_eta_task_limit`` so countdown polls cannot fill worker memory.
- On RabbitMQ (``amqp://``): quorum queues, confirms and native delayed delivery, so
  countdowns wait in the broker (``workers/brokers.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from workers import shutdown, store_guard
from workers.brokers import broker_kind, task_queues, transport_config, whole_second_countdown
from workers.contract import ALL_QUEUES, TASK_QUEUES
from workers.redis_client import is_sentinel_url, kombu_sentinel_url, sentinel_kwargs
from workers.settings import Settings, get_settings

#: Soft/hard time limits per stage (seconds). Download is long: big files, slow links.
TIME_LIMITS_S: dict[str, tuple[float, float]] = {
    "nbq.generate": (30, 60),
    "nbq.submit": (60, 90),
    "nbq.poll": (45, 75),
    "nbq.download": (600, 660),
    "nbq.reconcile": (120, 180),
}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration derived from ``NBQ_*`` settings (pure, tested directly).

    The broker-dependent part (queues, transport options, delayed delivery) comes from
    ``workers.brokers`` by the broker's kind; Sentinel adds its transport options.
    """
    config = _base_config(settings)
    if is_sentinel_url(settings.broker_url):
        config.update(sentinel_broker_config(settings))
    return config


def sentinel_broker_config(settings: Settings) -> dict[str, Any]:
    """kombu's Sentinel transport: the master's name, the sentinels' password and TLS, and
    publish retries long enough to outlast a failover (the default gives up in ~1 s)."""
    password = settings.redis_password
    options = {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": sentinel_kwargs(settings, socket_timeout=5.0),
    }
    config: dict[str, Any] = {
        "broker_url": kombu_sentinel_url(
            settings.broker_url, password.get_secret_value() if password else None
        ),
        "broker_transport_options": {
            **_base_config(settings)["broker_transport_options"],
            **options,
        },
        "task_publish_retry_policy": {
            "max_retries": max(3, int(settings.redis_failover_timeout_s / 0.5)),
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 0.5,
        },
    }
    if settings.redis_sentinel_tls:
        import ssl

        config["broker_use_ssl"] = {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            **({"ssl_ca_certs": settings.redis_tls_ca_file} if settings.redis_tls_ca_file else {}),
        }
    return config


def _base_config(settings: Settings) -> dict[str, Any]:
    kind = broker_kind(settings.broker_url)
    return {
        "broker_url": settings.broker_url,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_default_queue": "submit",
        "task_queues": task_queues(kind, ALL_QUEUES),
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_create_missing_queues": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_prefetch_multiplier": 1,
        # The consumer guard: every message checked on receipt, refusals dead-lettered.
        "worker_consumer": "workers.guard.consumer:GuardedConsumer",
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "worker_soft_shutdown_timeout": 20.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "task_track_started": True,
        "task_acks_late": False,
        "task_reject_on_worker_lost": False,
        "task_annotations": {
            name: {"soft_time_limit": soft, "time_limit": hard}
            for name, (soft, hard) in TIME_LIMITS_S.items()
        },
        "broker_pool_limit": 10,
        "timezone": "UTC",
        "enable_utc": True,
        **transport_config(
            kind,
            visibility_timeout_s=settings.visibility_timeout_s,
            eta_task_limit=settings.worker_eta_task_limit,
        ),
    }


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


_closed_broker_channel_is_a_connection_error()


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


_unacked_bookkeeping_without_multi()


class NbqCelery(Celery):  # type: ignore[misc]
    """Celery whose countdowns fit the broker: whole seconds on AMQP (native delayed
    delivery cannot carry less), unchanged on Redis. Every send passes here: stage
    scheduling, ``self.retry`` and raw producers alike."""

    whole_second_countdowns = False

    def send_task(
        self,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        countdown: float | None = None,
        *more: Any,
        **options: Any,
    ) -> Any:
        if self.whole_second_countdowns:
            countdown = whole_second_countdown(countdown)
        return super().send_task(name, args, kwargs, countdown, *more, **options)


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery_app = NbqCelery("nbq")
    celery_app.whole_second_countdowns = broker_kind(settings.broker_url) == "amqp"
    celery_app.conf.update(celery_config(settings))
    celery_app.conf.imports = ("workers.tasks",)
    return celery_app


app = create_app()


def _configure_logging() -> None:
    from workers.logs import configure_logging, register_secret

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    for secret in (
        settings.evolink_api_key,
        settings.s3_secret_key,
        settings.s3_access_key,
        settings.flower_basic_auth,
        settings.ingress_tokens,
        settings.callback_secret,
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


_configure_logging()
shutdown.install()
store_guard.install()
