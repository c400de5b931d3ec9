"""B1's second baseline: three Celery tasks per job that make only the pipeline's I/O.

The same calls a real job makes, through the same clients (``Runtime``): create a task
on the emulator, query it, fetch a result image through the guarded fetcher and write
it plus a small manifest to S3 — but no job record, transitions, breaker, limiter,
metrics or logs. Its throughput is the ceiling for *any* pipeline that does this job's
work with Celery on this machine; the gap between it and the real pipeline is what our
own bookkeeping costs.

    celery -A benchmarks.io_floor_tasks worker -Q bench-io -P threads -c 8
"""

from __future__ import annotations

import os
from typing import Any

from celery import chain

from benchmarks.baseline_app import baseline_app
from benchmarks.harness import REQUEST
from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.evolink.results import open_result
from nanobanana_queue.workers.runtime import get_runtime

QUEUE = "bench-io"
DONE_KEY = "bench:io:done"
#: A finished task's result link, fetched by every job's third task (set by B1).
RESULT_URL_ENV = "NBQ_BENCH_RESULT_URL"
# Configured at import from the environment: import only after the benchmark's own
# services are in the settings (``harness.use_env``), never at the top of a bench module.

app = baseline_app("nbq-bench-io", QUEUE)


@app.task(name="bench.io.create")  # type: ignore[untyped-decorator]
def create(job: int) -> str:
    task = (
        get_runtime()
        .api()
        .create_task(
            GenerationRequest.model_validate(REQUEST), idempotency_key=None, callback_url=None
        )
    )
    return str(task.id)


@app.task(name="bench.io.query")  # type: ignore[untyped-decorator]
def query(task_id: str) -> str:
    get_runtime().api().get_task(task_id)
    return task_id


@app.task(name="bench.io.store")  # type: ignore[untyped-decorator]
def store(task_id: str) -> str:
    rt = get_runtime()
    settings = rt.settings
    with open_result(
        os.environ[RESULT_URL_ENV],
        policy=rt.url_policy(),
        max_bytes=settings.max_result_bytes,
        timeout_s=settings.download_timeout_s,
        chunk_bytes=settings.download_chunk_bytes,
        client=rt.result_client(),
    ) as stream:
        stored = rt.objects().put_image_stream(
            f"bench-io/{task_id}/0",
            stream.iter_chunks(),
            max_bytes=settings.max_result_bytes,
            metadata={"task": task_id},
            source_index=0,
            length=stream.content_length,
        )
    rt.objects().put_json(f"bench-io/{task_id}/manifest.json", stored.model_dump(mode="json"))
    rt.redis.incr(DONE_KEY)
    return task_id


def send_chain(job: int) -> Any:
    """One floor job: create → query → store."""
    return chain(create.s(job), query.s(), store.s()).apply_async()
