"""Native delayed delivery that declares every queue of ours before binding it.

Celery's ``DelayedDelivery`` bootstep binds every queue in ``app.amqp.queues`` to the
``celery_delayed_delivery`` exchange, but declares none of them: a worker started with
``-Q submit`` fails on ``notify`` (and any queue no worker has declared yet) with a 404,
logs CRITICAL "Native delayed delivery will not be available", and a countdown message
to that queue reaches the end of the delay ladder with nowhere to go: dropped as
unroutable (celery#9960, fix #9959). Here each queue is declared first, from the same
``Queue`` objects ``task_queues`` holds (durable quorum, topic exchange of its own), so
every worker binds every queue of ours whichever queues it consumes.

Used by ``GuardedConsumer`` in place of Celery's step (same position, same include rule).
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer.delayed_delivery import DelayedDelivery
from kombu.common import Broadcast
from kombu.entity import Queue

from nanobanana_queue.workers.logs import get_logger

log = get_logger("nbq.guard")

# Celery 5.7's hook this step relies on: fail loudly at import if a Celery upgrade drops it.
assert callable(getattr(DelayedDelivery, "_bind_queues", None)), "Celery's DelayedDelivery changed"


class DeclaringDelayedDelivery(DelayedDelivery):  # type: ignore[misc]
    """Celery's step, with every application queue declared before it is bound."""

    def _bind_queues(self, app: Any, connection: Any) -> None:
        channel = connection.default_channel
        for queue in app.amqp.queues.values():
            if isinstance(queue, Broadcast) or not isinstance(queue, Queue):
                continue
            # Idempotent: the same arguments as the consumer's own declaration. A failure
            # here is left to Celery's bind below, which logs and retries it.
            try:
                queue.bind(channel).declare()  # type: ignore[no-untyped-call]
            except Exception as exc:
                log.warning("queue_declare_failed", queue=queue.name, error=type(exc).__name__)
                raise
        super()._bind_queues(app, connection)
