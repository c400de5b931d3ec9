"""Warn when nothing will consume what was just enqueued (no worker on the entry queue).

One broadcast ``inspect active_queues`` with a short timeout: the workers answer from
their consumer thread even while busy, so silence means none is running for the queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nanobanana_queue.workers.cli.common import err_console, line
from nanobanana_queue.workers.contract import TASK_GENERATE, TASK_QUEUES
from nanobanana_queue.workers.urls import masked_url

if TYPE_CHECKING:
    from nanobanana_queue.producers.api import Producer

#: Seconds to wait for worker replies (each ``nbq submit`` / ``nbq batch`` pays it once).
PING_TIMEOUT_S = 0.5


def workers_consuming(producer: Producer, queue: str) -> list[str] | None:
    """Names of workers consuming ``queue``; None when the broker could not be asked."""
    try:
        replies = producer.celery.control.inspect(timeout=PING_TIMEOUT_S).active_queues()
    except Exception:  # a broadcast failing is no reason to fail an enqueue that worked
        return None
    return sorted(
        name
        for name, queues in (replies or {}).items()
        if any(q.get("name") == queue for q in queues or [])
    )


def warn_if_unconsumed(producer: Producer) -> bool:
    """Print a warning (stderr) if no worker consumes the entry queue; True if warned."""
    queue = TASK_QUEUES[TASK_GENERATE]
    consuming = workers_consuming(producer, queue)
    if consuming is None or consuming:
        return False
    err_console.print(
        line(
            ("warning: ", "yellow"),
            f"no worker answered for queue {queue!r} on "
            f"{masked_url(producer.settings.broker_url)} within {PING_TIMEOUT_S}s; the job "
            "waits in the queue until one starts (nbq worker --queues submit,poll,download)",
        ),
        highlight=False,
    )
    return True
