"""``nbq.reconcile`` and the reconciler loop that every worker host may run."""

from __future__ import annotations

import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from nanobanana_queue.workers.app import app
from nanobanana_queue.workers.contract import TASK_RECONCILE
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.pipeline import RECONCILE
from nanobanana_queue.workers.probes import Heartbeat
from nanobanana_queue.workers.runtime import get_runtime
from nanobanana_queue.workers.stages.reconcile import reap_dead_workers, reconcile_once
from nanobanana_queue.workers.tasks.base import dispatcher

log = get_logger("nbq.reconcile")
_stop = threading.Event()


@app.task(name=TASK_RECONCILE, **RECONCILE.ack_options)
def reconcile_task() -> int:
    """One pass; returns how many jobs were re-driven."""
    return reconcile_once(get_runtime(), dispatcher().send).total


def reconcile_forever(
    interval_s: float, stop: threading.Event | None = None, heartbeat: Heartbeat | None = None
) -> None:
    """Pass after pass until stopped; one pass failing never stops the loop. With a
    ``heartbeat`` (the standalone ``nbq reconcile``), each pass touches its probe file.
    Between full passes the cheap lease pass runs every third of ``NBQ_WORKER_LEASE_S``,
    so a dead worker's jobs move within seconds, not a reconcile interval later."""
    stop = stop or _stop
    if heartbeat is not None:
        heartbeat.start()
    while not stop.is_set():
        try:
            reconcile_once(get_runtime(), dispatcher().send)
        except Exception as exc:
            log.warning("reconcile_pass_failed", error=type(exc).__name__, detail=str(exc))
        if heartbeat is not None:
            heartbeat.beat()
        _reap_until(stop, interval_s)


def _reap_until(stop: threading.Event, interval_s: float) -> None:
    """Wait ``interval_s``, running the lease pass every third of a lease meanwhile."""
    deadline = time.monotonic() + interval_s
    if interval_s <= 0:
        return
    try:
        lease_s = get_runtime().settings.worker_lease_s
    except Exception as exc:  # settings unreadable: the full passes still run
        log.warning("reap_pass_failed", error=type(exc).__name__, detail=str(exc))
        lease_s = 0
    step_s = lease_s / 3 if lease_s > 0 else interval_s
    while True:
        left_s = deadline - time.monotonic()
        if left_s <= 0 or stop.wait(min(step_s, left_s)) or time.monotonic() >= deadline:
            return
        try:
            reap_dead_workers(get_runtime(), dispatcher().send)
        except Exception as exc:
            log.warning("reap_pass_failed", error=type(exc).__name__, detail=str(exc))


@worker_ready.connect
def _start_in_worker(**_: Any) -> None:
    settings = get_runtime().settings
    if settings.reconcile_in_worker:
        _stop.clear()
        thread = threading.Thread(
            target=reconcile_forever,
            args=(settings.reconcile_interval_s,),
            daemon=True,
            name="nbq-reconciler",
        )
        thread.start()


@worker_shutdown.connect
def _stop_in_worker(**_: Any) -> None:
    _stop.set()
    time.sleep(0)
