"""Names other services depend on: task names, queues and the message contract.

These are promises (see ``docs/message-contract.md``): another service may call
``app.send_task("nbq.generate", kwargs={"request": {...}, "job_id": "..."})`` without
importing this code. Change them only with a migration note.
"""

from __future__ import annotations

from typing import Final

TASK_GENERATE: Final = "nbq.generate"
TASK_SUBMIT: Final = "nbq.submit"
TASK_POLL: Final = "nbq.poll"
TASK_DOWNLOAD: Final = "nbq.download"
TASK_RECONCILE: Final = "nbq.reconcile"
#: Attach an existing API task (from a verified callback or a person) to a job.
TASK_ADOPT: Final = "nbq.adopt"
#: One completion-webhook delivery try (workers/notify/), on its own queue.
TASK_NOTIFY: Final = "nbq.notify"

QUEUE_SUBMIT: Final = "submit"
QUEUE_POLL: Final = "poll"
QUEUE_DOWNLOAD: Final = "download"
ALL_QUEUES: Final = (QUEUE_SUBMIT, QUEUE_POLL, QUEUE_DOWNLOAD)
#: Webhook deliveries: a queue of their own, so a slow receiver never holds a stage.
QUEUE_NOTIFY: Final = "notify"
#: Every queue the app declares (the stages' and the webhooks').
DECLARED_QUEUES: Final = (*ALL_QUEUES, QUEUE_NOTIFY)

#: Which queue each task is routed to. ``nbq.generate`` enters through the submit queue.
TASK_QUEUES: Final = {
    TASK_GENERATE: QUEUE_SUBMIT,
    TASK_SUBMIT: QUEUE_SUBMIT,
    TASK_POLL: QUEUE_POLL,
    TASK_DOWNLOAD: QUEUE_DOWNLOAD,
    TASK_RECONCILE: QUEUE_POLL,
    TASK_ADOPT: QUEUE_POLL,
    TASK_NOTIFY: QUEUE_NOTIFY,
}
