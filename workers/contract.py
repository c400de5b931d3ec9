"""Names other services depend on: task names, queues and the message contract.

Each is read from the pipeline's declaration (``workers/pipeline.py``); this module keeps
the names the rest of the code imports.

These are promises (see ``docs/message-contract.md``): another service may call
``app.send_task("nbq.generate", kwargs={"request": {...}, "job_id": "..."})`` without
importing this code. Change them only with a migration note.
"""

from __future__ import annotations

from typing import Final

from nanobanana_queue.workers.pipeline import (
    ADOPT,
    DOWNLOAD,
    GENERATE,
    NOTIFY,
    PIPELINE,
    POLL,
    RECONCILE,
    SUBMIT,
)

TASK_GENERATE: Final = GENERATE.task
TASK_SUBMIT: Final = SUBMIT.task
TASK_POLL: Final = POLL.task
TASK_DOWNLOAD: Final = DOWNLOAD.task
TASK_RECONCILE: Final = RECONCILE.task
#: Attach an existing API task (from a verified callback or a person) to a job.
TASK_ADOPT: Final = ADOPT.task
#: One completion-webhook delivery try (workers/notify/), on its own queue.
TASK_NOTIFY: Final = NOTIFY.task

QUEUE_SUBMIT: Final = SUBMIT.queue
QUEUE_POLL: Final = POLL.queue
QUEUE_DOWNLOAD: Final = DOWNLOAD.queue
#: The stages' queues (the ones the reconciler and the exporter watch).
ALL_QUEUES: Final = (QUEUE_SUBMIT, QUEUE_POLL, QUEUE_DOWNLOAD)
#: Webhook deliveries: a queue of their own, so a slow receiver never holds a stage.
QUEUE_NOTIFY: Final = NOTIFY.queue
#: Every queue the app declares (the stages' and the webhooks').
DECLARED_QUEUES: Final = tuple(dict.fromkeys(stage.queue for stage in PIPELINE))

#: Which queue each task is routed to. ``nbq.generate`` enters through the submit queue.
TASK_QUEUES: Final = {stage.task: stage.queue for stage in PIPELINE}
