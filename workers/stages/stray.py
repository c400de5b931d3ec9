"""A stage message for a job that never existed: a dead letter, not a phantom job.

``nbq.download`` is only ever sent by the poll stage, for a recorded job, and carries the
Evolink task id. One with neither a record nor a task id (a hand-sent ``send_task``, a
typo'd id) has nothing to finish and nothing was lost: writing a failed ``record_lost``
job for it would invent a job and count a loss. It goes to the dead letters instead
(reason ``unknown_job``: ``nbq dead list``), where a person can see and purge it. A store
that was reset (its epoch marker gone) is the other way a record vanishes: then the job
is reported lost as before (workers/stages/rescue.py).
"""

from __future__ import annotations

import json
import socket

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.common import log
from nanobanana_queue.workers.stages.steps import Done

#: The dead-letter reason (``nbq_dead_letters_total{reason}``, workers/guard/inspect.py).
UNKNOWN_JOB = "unknown_job"


def store_was_reset(rt: Runtime) -> bool:
    """Has this process seen the store lose its epoch marker (now or before)?"""
    watcher = rt.epoch()
    return watcher.check_now() or watcher.resets_seen > 0


def refuse_unknown_job(rt: Runtime, job_id: str, *, task: str, queue: str) -> Done:
    """Keep the message as a dead letter; write no record, count no failed job."""
    from nanobanana_queue.workers.deadletters import DeadLetterStore, build_letter

    detail = f"{task} for job {job_id!r}: no such job and no task id, nothing to finish"
    letter = build_letter(
        queue=queue,
        reason=UNKNOWN_JOB,
        detail=detail,
        hostname=socket.gethostname(),
        headers={"task": task},
        body=json.dumps([[job_id], {}, {}]),
        content_type="application/json",
        content_encoding="utf-8",
    )
    try:
        DeadLetterStore.from_settings(rt.settings, rt.redis).add(letter)
    except Exception as exc:  # the dead-letter store failing must not fail the worker
        log.error("dead_letter_write_failed", job_id=job_id, error=type(exc).__name__)
    metrics.dead_letter(queue, UNKNOWN_JOB)
    log.warning("message_refused", reason=UNKNOWN_JOB, detail=detail, job_id=job_id, task=task)
    return Done(UNKNOWN_JOB)
