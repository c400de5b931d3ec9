"""Celery tasks ``nbq.*``: thin wrappers that call one stage function each."""

from nanobanana_queue.workers.tasks.notify import notify_task
from nanobanana_queue.workers.tasks.pipeline import (
    download_task,
    generate_task,
    poll_task,
    submit_task,
)
from nanobanana_queue.workers.tasks.reconcile import reconcile_task

__all__ = [
    "download_task",
    "generate_task",
    "notify_task",
    "poll_task",
    "reconcile_task",
    "submit_task",
]
