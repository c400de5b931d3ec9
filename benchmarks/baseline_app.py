"""The Celery app of a B1 baseline: the pipeline's configuration on one queue of its own.

JSON, prefetch 1, task events on, the same broker — so the only difference from the real
pipeline is the work each task does. Celery's own consumer, not the guard: the guard
refuses every task that is not ``nbq.*`` (a baseline under it never finishes), and what it
costs per message belongs to the pipeline's side of the ratio. Built from the environment
at import: import a baseline module only after the benchmark's services are in the
settings (``harness.use_env``).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu.entity import Queue

from nanobanana_queue.workers.app import celery_config
from nanobanana_queue.workers.settings import get_settings


def baseline_app(name: str, queue: str) -> Celery:
    if "NBQ_BROKER_URL" not in os.environ:
        # Imported before the benchmark's stack: its sends would go to the default
        # broker, the machine's own Redis (:6379), which a benchmark never touches.
        raise RuntimeError(f"{name}: import only once the benchmark's stack is in the env")
    app = Celery(name)
    config = celery_config(get_settings())
    config.pop("worker_consumer", None)  # Celery's default consumer (see above)
    config.update(
        {
            "task_queues": [Queue(queue)],  # type: ignore[no-untyped-call]
            "task_default_queue": queue,
            "task_routes": {},
            "task_annotations": {},
        }
    )
    app.conf.update(config)
    return app
