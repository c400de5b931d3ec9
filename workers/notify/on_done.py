"""``on_done``: a job's end as a Celery message to another app, without HTTP.

``on_done={"task": "shop.image_ready", "queue": "shop"}`` sends task ``shop.image_ready``
to queue ``shop`` with one keyword argument, ``job`` (the same public view a webhook's
``data`` holds), when the job ends (``stored``, ``failed``, ``cancelled``,
``outcome_unknown``). The receiving app needs only Celery and the broker URL, none of our
code. Sent by the end listener of the process that ended the job; a send lost with that
process or refused by the broker is sent again by the reconciler (the notify outbox,
:mod:`.outbox`): at least once, so a receiver de-duplicates on the job id and event.
"""

from __future__ import annotations

import re
from typing import Any

from nanobanana_queue.workers.contract import DECLARED_QUEUES

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}$")


class OnDoneError(ValueError):
    """An ``on_done`` that cannot be honoured."""


def check_on_done(value: Any) -> tuple[str, str] | None:
    """``(task, queue)`` from ``{"task": ..., "queue": ...}``; ``OnDoneError`` says why not."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"task", "queue"}:
        raise OnDoneError('on_done must be {"task": "app.task_name", "queue": "queue_name"}')
    task, queue = value["task"], value["queue"]
    for name, item in (("task", task), ("queue", queue)):
        if not isinstance(item, str) or not _NAME.match(item):
            raise OnDoneError(f"on_done.{name} must be 1-200 characters of A-Z a-z 0-9 _ . : -")
    if queue in DECLARED_QUEUES or task.startswith("nbq."):
        raise OnDoneError("on_done must name your own task and queue, not the pipeline's")
    return task, queue
