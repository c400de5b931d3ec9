"""The end listener: a job's end becomes one ``nbq.notify`` message (if it wants one).

Installed on a runtime's job store by the worker (``get_runtime``) and by a ``Producer``
(its cancels); called by ``JobStore.apply`` right after the one write that moved the job,
so a duplicated or redelivered stage (which loses that write) sends nothing. The message
is a send, never the HTTP call: no stage waits for a receiver.

Both listeners are the store's ``outbox_listeners``: a process killed between the write
and the send (or a send that raised) leaves the job in the notify outbox, and the
reconciler calls them again (:mod:`.outbox`; the same ``webhook-id``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.notify.config import NotifyConfig
from nanobanana_queue.workers.notify.events import (
    EVENT_FOR_STATE,
    PROGRESS_EVENT,
    body,
    progress_webhook_id,
    public_view,
    webhook_id,
)
from nanobanana_queue.workers.stages.steps import Notify

log = get_logger("nbq.notify")


def on_done_listener(send_task: Callable[..., object]) -> Callable[[JobRecord], None]:
    """The end listener for ``on_done``: ``send_task(name, kwargs=..., queue=...)`` (an
    app's), the job's public view as the task's only keyword argument, ``job``."""
    from kombu.entity import Queue

    def on_end(record: JobRecord) -> None:
        event = EVENT_FOR_STATE.get(record.state)
        if event is None or not record.on_done_task or not record.on_done_queue:
            return
        queue = record.on_done_queue
        send_task(
            record.on_done_task,
            kwargs={"job": {**public_view(record, event), "event": event}},
            queue=Queue(queue, routing_key=queue),  # type: ignore[no-untyped-call]
        )
        log.info("on_done_sent", job_id=record.job_id, task=record.on_done_task, queue=queue)

    return on_end


def notify_listener(
    config: NotifyConfig, send: Callable[[Notify], object]
) -> Callable[[JobRecord], None]:
    """The store's end listener for ``config`` sending through ``send`` (a dispatcher's)."""

    def on_end(record: JobRecord) -> None:
        event = EVENT_FOR_STATE.get(record.state)
        url = config.url_for(record.producer, record.notify_url)
        if event is None or url is None:
            return
        if config.secret_for(record.producer) is None:
            log.warning("notify_skipped_no_secret", job_id=record.job_id, notify_event=event)
            return
        send(
            Notify(
                webhook_id=webhook_id(record.job_id, event, record.updated_at),
                job_id=record.job_id,
                event=event,
                url=url,
                payload=body(record, event),
                first_at=time.time(),
            )
        )

    return on_end


def progress_listener(
    config: NotifyConfig, send: Callable[[Notify], object]
) -> Callable[[JobRecord], None]:
    """The store's progress listener: a ``job.progress`` delivery for an opted-in producer
    (NBQ_NOTIFY_PROGRESS) with a notify URL and a secret. Best effort: not in the outbox,
    and the stage calls it only after the one write that changed the progress value."""

    def on_progress(record: JobRecord) -> None:
        url = config.url_for(record.producer, record.notify_url)
        if url is None or not config.wants_progress(record.producer):
            return
        if config.secret_for(record.producer) is None:
            return
        send(
            Notify(
                webhook_id=progress_webhook_id(record.job_id, record.state.value, record.progress),
                job_id=record.job_id,
                event=PROGRESS_EVENT,
                url=url,
                payload=body(record, PROGRESS_EVENT),
                first_at=time.time(),
            )
        )

    return on_progress
