"""The Celery application: ``celery -A workers.app worker -Q submit`` works as is.

Importing it has no side effects: the app reads its settings when first used, and the
worker's process setup (logging, kombu fix, shutdown deadline, store guard) runs at worker
start (``workers/startup.py``).

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

from typing import Any

from celery import Celery

from nanobanana_queue.workers.brokers import (
    broker_kind,
    task_queues,
    transport_config,
    whole_second_countdown,
)
from nanobanana_queue.workers.contract import DECLARED_QUEUES, TASK_QUEUES
from nanobanana_queue.workers.pipeline import PIPELINE, SUBMIT_LIMITS
from nanobanana_queue.workers.redis_client import (
    is_sentinel_url,
    kombu_sentinel_url,
    sentinel_kwargs,
)
from nanobanana_queue.workers.settings import SUBMIT_SOFT_RATIO, Settings, get_settings
from nanobanana_queue.workers.startup import WorkerLoader

#: Soft/hard time limits per task (seconds), as declared in ``workers/pipeline.py``, but
#: for the tasks that make a create (``SUBMITTING_TASKS``, from NBQ_SUBMIT_TIME_LIMIT_S).
TIME_LIMITS_S: dict[str, tuple[float, float]] = {
    stage.task: stage.limits for stage in PIPELINE if not isinstance(stage.limits, str)
}
#: The tasks that make a create (``nbq.submit``, and ``nbq.generate``: intake, then the
#: submit inline). Their hard limit is also how long the reconciler leaves a submit's
#: claim alone before it takes the worker for dead.
SUBMITTING_TASKS = tuple(stage.task for stage in PIPELINE if stage.limits == SUBMIT_LIMITS)


def submit_time_limits_s(settings: Settings) -> tuple[float, float]:
    """Soft and hard limit of the submitting tasks (60/90 s by default)."""
    hard = settings.submit_time_limit_s
    return hard * SUBMIT_SOFT_RATIO, hard


def time_limits_s(settings: Settings) -> dict[str, tuple[float, float]]:
    """Soft and hard time limit of every ``nbq.*`` task."""
    return {**TIME_LIMITS_S, **dict.fromkeys(SUBMITTING_TASKS, submit_time_limits_s(settings))}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration derived from ``NBQ_*`` settings (pure, tested directly).

    The broker-dependent part (queues, transport options, delayed delivery) comes from
    ``workers.brokers`` by the broker's kind; Sentinel adds its transport options.
    """
    config = _base_config(settings)
    if is_sentinel_url(settings.broker_url):
        config.update(sentinel_broker_config(settings))
    elif settings.broker_url.startswith("rediss://"):
        config["broker_use_ssl"] = broker_tls(settings)
    return config


def broker_tls(settings: Settings) -> dict[str, Any]:
    """kombu's TLS options for a ``rediss://`` or TLS Sentinel broker: certificates
    verified, against NBQ_REDIS_TLS_CA_FILE when set (Celery refuses ``rediss://``
    without ``ssl_cert_reqs``)."""
    import ssl

    return {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        **({"ssl_ca_certs": settings.redis_tls_ca_file} if settings.redis_tls_ca_file else {}),
    }


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
        config["broker_use_ssl"] = broker_tls(settings)
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
        "task_queues": task_queues(kind, DECLARED_QUEUES),
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_create_missing_queues": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_prefetch_multiplier": 1,
        # The consumer guard: every message checked on receipt, refusals dead-lettered.
        "worker_consumer": "nanobanana_queue.workers.guard.consumer:GuardedConsumer",
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
            for name, (soft, hard) in time_limits_s(settings).items()
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


class NbqCelery(Celery):  # type: ignore[misc]
    """Celery configured from ``NBQ_*`` settings on first use, not at construction, and
    whose countdowns fit the broker: whole seconds on AMQP (native delayed delivery cannot
    carry less), unchanged on Redis. Every send passes here: stage scheduling,
    ``self.retry`` and raw producers alike.

    Built with settings (a Producer's, a test's) it uses those; built without (the module's
    ``app`` that ``celery -A workers.app`` finds) it reads the environment when Celery
    first needs its configuration, so importing this module reads nothing.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__("nbq", loader=WorkerLoader)
        self._nbq_settings = settings
        self._whole_seconds: bool | None = None
        self.on_configure.connect(self._configure_from_settings, weak=False)

    def nbq_settings(self) -> Settings:
        """The settings this app is (or will be) configured from."""
        return self._nbq_settings or get_settings()

    def _configure_from_settings(self, **_: Any) -> None:
        self.config_from_object({**celery_config(self.nbq_settings()), "imports": IMPORTS})

    @property
    def whole_second_countdowns(self) -> bool:
        if self._whole_seconds is None:
            self._whole_seconds = broker_kind(self.nbq_settings().broker_url) == "amqp"
        return self._whole_seconds

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


#: Modules a worker imports to register the ``nbq.*`` tasks.
IMPORTS = ("nanobanana_queue.workers.tasks",)


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings`` (or, lazily, the environment's). Pure: nothing is read,
    connected or configured until the app is used."""
    return NbqCelery(settings)


#: What ``celery -A workers.app`` finds; configured from the environment on first use.
app = create_app()
