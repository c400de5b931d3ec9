"""The worker's side of the health probes (``workers/probes.py``): a consumer bootstep.

It starts after the task consumer (``Tasks``), so "ready" means the queues are being
consumed. Its heartbeat is an entry on the worker's timer, which the consumer's event loop
fires in the main thread between deliveries: the file stays fresh exactly while that
loop turns. A loop wedged on a lock, a process frozen (``SIGSTOP``), or a consumer stuck
reconnecting to a broker that does not come back stops the touches, and the liveness
probe fails after ``missed`` intervals. Task threads and prefork children never touch it,
so a busy pool is not mistaken for a live consumer (the ``solo`` pool runs tasks on that
loop and would miss beats during a long task: use ``prefork`` or ``threads``).

When the consumer stops (connection lost, warm shutdown) the ready file is removed and the
timer entry cancelled; Celery cancels a failed connection's timer entries too, and starts
this step again once reconnected.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps

from nanobanana_queue.workers.probes import WORKER, Heartbeat
from nanobanana_queue.workers.settings import get_settings


class ConsumerHeartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """Touches ``worker.alive`` every ``NBQ_HEALTH_INTERVAL_S``; ``worker.ready`` while
    consuming."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        nbq_settings = getattr(parent.app, "nbq_settings", get_settings)
        settings = nbq_settings()
        self.heartbeat = Heartbeat(settings.health_dir, WORKER, settings.health_interval_s)
        self._entry: Any = None

    def start(self, parent: Any) -> None:
        self.heartbeat.start()
        self.heartbeat.mark_ready()
        self._entry = parent.timer.call_repeatedly(
            self.heartbeat.interval_s, self.heartbeat.beat, priority=10
        )

    def stop(self, parent: Any) -> None:
        self.heartbeat.mark_not_ready()
        if self._entry is not None:
            self._entry.cancel()
            self._entry = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def install(app: Celery) -> None:
    """Add the step to ``app``'s consumer blueprint (before the worker builds it)."""
    app.steps["consumer"].add(ConsumerHeartbeat)
