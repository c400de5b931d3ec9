"""A bounded warm shutdown: SIGTERM lets running tasks finish, but not forever.

Celery's SIGTERM waits for every running task (``worker_soft_shutdown_timeout`` only bounds
a cold shutdown, and a cold one cannot cancel a ``threads`` task). After the timeout this
gives the unacknowledged messages (running late-ack tasks, held countdown polls) back to
the broker and ends the process, so a rolling update never waits on a 10-minute download
and nothing is left for the visibility timeout.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

from celery import signals

_worker: Any = None


def _keep_worker(sender: Any = None, **_: Any) -> None:
    global _worker
    _worker = sender


def _start_deadline(how: str = "", **_: Any) -> None:
    if how != "Warm" or _worker is None:
        return
    timeout_s = float(_worker.app.conf.worker_soft_shutdown_timeout or 0)
    if timeout_s <= 0:
        return
    timer = threading.Timer(timeout_s, _give_back_and_exit)
    timer.daemon = True
    timer.start()


def _give_back_and_exit() -> None:
    """Runs only if the warm shutdown outlived the timeout."""
    try:
        consumer = _worker.consumer.task_consumer
        if consumer is not None:
            consumer.channel.qos.restore_unacked_once(stderr=sys.stderr)
    finally:
        _flush_metrics()
        print("warm shutdown timed out: unacked messages given back, exiting", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)


def _flush_metrics() -> None:
    """``os._exit`` runs no atexit hook and sends no ``worker_shutdown``: write the
    finished tasks' held metric events (NBQ_METRICS_FLUSH_S) first. Bounded by the
    metrics client's 1 s timeouts; never stops the exit."""
    from nanobanana_queue.workers import metrics

    with contextlib.suppress(Exception):  # the exit must happen whatever the metrics do
        metrics.flush()


def install() -> None:
    signals.worker_init.connect(_keep_worker, weak=False)
    signals.worker_shutting_down.connect(_start_deadline, weak=False)
