"""B1's second baseline (the I/O floor): a job's own I/O through Celery, nothing else.

Per job, the calls a real job makes, through the same clients (``Runtime``) and the same
poll schedule: the first task creates a task on the emulator and sends the first query
with the pipeline's countdown (``PollSchedule.first_countdown_s`` on the task's
``estimated_time``); a query asks the API and, while the task is still generating, sends
the next query with the pipeline's next countdown (``next_countdown_s``, from its
progress); the query that finds it completed sends the store task, which fetches every
result link of *that* task through the guarded fetcher and writes each image plus a
small manifest to S3. No job record, transitions, breaker, limiter, credits, metrics or
logs. Its throughput is the ceiling for *any* pipeline that does this job's work with
Celery on this machine; the gap between it and the real pipeline is what our own
bookkeeping costs (B1io).

    celery -A benchmarks.io_floor_tasks worker -Q bench-io -P prefork -c 4
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks.baseline_app import baseline_app
from benchmarks.harness import REQUEST
from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.evolink.models import GenerationRequest, TaskStatus
from nanobanana_queue.workers.evolink.results import open_result
from nanobanana_queue.workers.runtime import get_runtime

QUEUE = "bench-io"
#: ``NBQ_BENCH_FLOOR_ACKS=late`` (``b1_throughput --floor-acks late``): the query and store
#: tasks ack late, as the pipeline's poll and download do (a message is acked only once
#: its work is done, so a killed worker loses nothing). The default, early, is the floor
#: issue 24 defined; "late" separates what the delivery guarantee costs (one more ack
#: round trip before a worker fetches its next message, prefetch 1) from our bookkeeping.
LATE_ACKS: dict[str, bool] = (
    {"acks_late": True, "reject_on_worker_lost": True}
    if os.environ.get("NBQ_BENCH_FLOOR_ACKS") == "late"
    else {}
)
DONE_KEY = "bench:io:done"
# Configured at import from the environment: import only after the benchmark's own
# services are in the settings (``harness.use_env``), never at the top of a bench module.

app = baseline_app("nbq-bench-io", QUEUE)
# The runtime's clients record API-call metrics on their own; the floor records none (the
# pipeline's metrics are part of what B1io measures). Each prefork child imports this
# module, so every process of the floor's worker has recording off.
metrics.set_enabled(False)


@app.task(name="bench.io.create")  # type: ignore[untyped-decorator]
def create(job: int) -> str:
    rt = get_runtime()
    task = rt.api().create_task(
        GenerationRequest.model_validate(REQUEST), idempotency_key=None, callback_url=None
    )
    countdown_s = rt.schedule.first_countdown_s(task.estimated_time_s, rt.rng)
    query.apply_async((task.id, time.time(), task.estimated_time_s), countdown=countdown_s)
    return str(task.id)


@app.task(name="bench.io.query", **LATE_ACKS)  # type: ignore[untyped-decorator]
def query(task_id: str, created_at: float, estimated_time_s: float | None) -> str:
    rt = get_runtime()
    task = rt.api().get_task(task_id)
    if task.status is TaskStatus.COMPLETED:
        store.apply_async((task_id, task.result_urls))
        return "completed"
    if task.status is not TaskStatus.PENDING and task.status is not TaskStatus.PROCESSING:
        raise RuntimeError(f"floor task {task_id} ended {task.status.value}")
    countdown_s = rt.schedule.next_countdown_s(
        estimated_time_s=estimated_time_s,
        elapsed_s=time.time() - created_at,
        progress=task.progress,
        rng=rt.rng,
    )
    query.apply_async((task_id, created_at, estimated_time_s), countdown=countdown_s)
    return "rescheduled"


@app.task(name="bench.io.store", **LATE_ACKS)  # type: ignore[untyped-decorator]
def store(task_id: str, urls: list[str]) -> str:
    rt = get_runtime()
    settings = rt.settings
    stored = []
    for index, url in enumerate(urls):
        with open_result(
            url,
            policy=rt.url_policy(),
            max_bytes=settings.max_result_bytes,
            timeout_s=settings.download_timeout_s,
            chunk_bytes=settings.download_chunk_bytes,
            client=rt.result_client(),
        ) as stream:
            stored.append(
                rt.objects().put_image_stream(
                    f"bench-io/{task_id}/{index}",
                    stream.iter_chunks(),
                    max_bytes=settings.max_result_bytes,
                    metadata={"task": task_id},
                    source_index=index,
                    length=stream.content_length,
                )
            )
    manifest = {"task": task_id, "objects": [obj.model_dump(mode="json") for obj in stored]}
    rt.objects().put_json(f"bench-io/{task_id}/manifest.json", manifest)
    rt.redis.incr(DONE_KEY)
    return task_id


def send_chain(job: int) -> Any:
    """One floor job: create, then queries on the pipeline's countdowns, then store."""
    return create.apply_async((job,))
