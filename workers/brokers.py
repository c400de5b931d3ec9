"""Which broker ``NBQ_BROKER_URL`` names, and the Celery settings each one needs.

One small branch point for every broker-dependent choice (settings validation, Celery
config, countdown rounding, queue lengths, the one-round-trip enqueue), so that another
broker kind (Sentinel) is one more case here rather than string checks across modules.

- ``redis``: kombu's Redis transport. Countdowns are held by the worker (bounded by
  ``NBQ_WORKER_ETA_TASK_LIMIT``) and redelivered after the visibility timeout.
- ``amqp``: RabbitMQ with **quorum** queues on topic exchanges, publisher confirms and
  Celery's *native delayed delivery*: a countdown waits in the broker (the
  ``celery_delayed_27`` … ``celery_delayed_0`` TTL/dead-letter ladder), never in a worker.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from kombu.entity import Exchange, Queue

BrokerKind = Literal["redis", "amqp"]

#: URL schemes per broker kind (``unix://`` is a Redis socket).
SCHEMES: Final[dict[str, BrokerKind]] = {
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "sentinel": "redis",  # kombu's Sentinel transport is its Redis transport behind Sentinel
    "amqp": "amqp",
    "amqps": "amqp",
}
#: Schemes the job store (``NBQ_REDIS_URL``) accepts: always a Redis.
REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


def broker_kind(url: str) -> BrokerKind:
    """``redis`` or ``amqp`` from the URL's scheme; ``ValueError`` for anything else."""
    kind = SCHEMES.get(urlsplit(url).scheme.lower())
    if kind is None:
        raise ValueError("must be a redis://, rediss://, sentinel://, amqp:// or amqps:// URL")
    return kind


def task_queues(kind: BrokerKind, names: tuple[str, ...]) -> list[Queue]:
    """Our queues. On AMQP: durable quorum queues, each bound to a topic exchange of its own
    name (native delayed delivery re-routes through topic exchanges; a direct exchange
    would make Celery fall back to holding the countdown in the worker)."""
    if kind == "redis":
        return [Queue(name) for name in names]  # type: ignore[no-untyped-call]
    return [
        Queue(  # type: ignore[no-untyped-call]
            name,
            Exchange(name, type="topic", durable=True),  # type: ignore[no-untyped-call]
            routing_key=name,
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
        for name in names
    ]


def transport_config(
    kind: BrokerKind, *, visibility_timeout_s: int, eta_task_limit: int
) -> dict[str, Any]:
    """The broker-dependent part of ``workers.app.celery_config``."""
    if kind == "redis":
        return {
            "broker_transport_options": {
                "visibility_timeout": visibility_timeout_s,
                "socket_keepalive": True,
                "health_check_interval": 10,
            },
            "worker_eta_task_limit": eta_task_limit,
        }
    return {
        # Quorum queues require publisher confirms; a publish returns once the broker
        # has the message on a quorum of nodes.
        "broker_transport_options": {"confirm_publish": True},
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        "broker_native_delayed_delivery_queue_type": "quorum",
        "worker_detect_quorum_queues": True,  # per-consumer QoS (no global QoS on quorum)
        # Pidbox (control) and event queues are transient: exclusive, so that RabbitMQ
        # ≥ 4.3 (which refuses transient non-exclusive queues) accepts them too.
        "control_queue_exclusive": True,
        "control_queue_durable": False,
        "event_queue_exclusive": True,
        "event_queue_durable": False,
        "broker_heartbeat": 30,
        # Countdowns wait in the broker, so the worker holds none; the limit stays as a
        # backstop for an ETA that falls back to the worker (e.g. a sub-second one).
        "worker_eta_task_limit": eta_task_limit,
    }


def whole_second_countdown(countdown: float | None) -> int | None:
    """A countdown native delayed delivery can carry: whole seconds, ``None`` for "now".

    Celery truncates a quorum countdown with ``int()`` and refuses one under a second
    (``calculate_routing_key`` raises ``ValueError``). Rounding here instead keeps the error
    at most half a second (a sub-second wait becomes one second: a backoff is never cut
    to nothing) and makes the message's ETA equal to its broker delay, so it is due on
    arrival and no worker holds it.
    """
    if countdown is None or countdown <= 0:
        return None
    return max(1, math.floor(countdown + 0.5))


def is_redis_url(url: str | None) -> bool:
    return url is not None and url.startswith(REDIS_SCHEMES)
