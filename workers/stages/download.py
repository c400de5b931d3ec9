"""Download: stream every result link into the bucket, then write the manifest.

Safe to run twice (late ack): objects already recorded on the job are skipped, keys are
deterministic, and only the run that moves ``downloading → stored`` counts. The last image
is recorded by that ``stored`` write itself (or, if the manifest fails, just before the
retry): a worker killed between the two fetches that one image again, to the same key.
"""

from __future__ import annotations

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.contract import QUEUE_DOWNLOAD, TASK_DOWNLOAD
from nanobanana_queue.workers.errors import PipelineError
from nanobanana_queue.workers.evolink.results import open_result
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord, StoredObject
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages.common import fail, log, now
from nanobanana_queue.workers.stages.steps import Done, Retry, Step
from nanobanana_queue.workers.storage.manifest import (
    build_manifest,
    manifest_key,
    object_key_stem,
    object_metadata,
)


def download(
    rt: Runtime,
    job_id: str,
    *,
    retries: int = 0,
    evolink_task_id: str | None = None,
) -> Step:
    """Run the download stage once; returns what comes next (its label names the outcome).

    ``evolink_task_id`` (carried by the message) lets a download whose job record vanished
    rescue the paid task through a fresh poll (the result links died with the record).
    """
    record = rt.store.get(job_id)
    if record is None:
        from nanobanana_queue.workers.stages.rescue import report_lost, rescue
        from nanobanana_queue.workers.stages.stray import refuse_unknown_job, store_was_reset

        if evolink_task_id:
            return rescue(rt, job_id, evolink_task_id, via="download")
        if not store_was_reset(rt):  # a job that never existed: nothing was lost
            return refuse_unknown_job(rt, job_id, task=TASK_DOWNLOAD, queue=QUEUE_DOWNLOAD)
        return report_lost(rt, job_id, stage="download")
    if record.is_terminal:
        return Done("gone")
    if record.state is not JobState.DOWNLOADING:
        return Done(f"stale_{record.state.value}")
    objects = list(record.objects)
    try:
        _store_results(rt, record, objects)
        rt.objects().put_json(
            manifest_key(rt.settings.s3_prefix, job_id),
            build_manifest(record.model_copy(update={"objects": objects}), objects),
        )
    except PipelineError as exc:
        if len(objects) > len(record.objects):
            # The last image is in the bucket but only STORED would have recorded it: a
            # failed manifest keeps it on the job, so the retry does not fetch it again.
            rt.store.apply(lifecycle.OBJECT_STORED, job_id, objects=objects)
        if exc.retry_rule is None:
            return fail(
                rt,
                job_id,
                exc,
                via=lifecycle.FAIL.only_from(JobState.DOWNLOADING),
                label=f"failed_{exc.reason}",
            )
        log.warning(
            "download_retry",
            job_id=job_id,
            evolink_task_id=record.evolink_task_id,
            reason=exc.reason,
            error_message=str(exc),
            retries=retries,
        )
        return Retry.of(
            rt,
            exc,
            attempt=retries,
            fail_from=(JobState.DOWNLOADING,),
            exhausted=type(exc)(f"download kept failing: {exc}"),
        )

    stored, applied = rt.store.apply(lifecycle.STORED, job_id, objects=objects)
    if not applied or stored is None:
        return Done("stale_on_store")
    queued_at = stored.state_times.get(JobState.QUEUED.value, stored.created_at)
    metrics.enqueue_to_stored(now() - queued_at)
    log.info(
        "job_stored",
        job_id=job_id,
        evolink_task_id=stored.evolink_task_id,
        objects=len(objects),
        bytes=sum(o.size for o in objects),
    )
    return Done("stored")


def _store_results(rt: Runtime, record: JobRecord, objects: list[StoredObject]) -> None:
    """Store every result not yet on the job, appending each to ``objects`` (the
    caller's list: it holds what is in the bucket even when a later one fails).

    Each is recorded on the job (``OBJECT_STORED``) as it lands, so a re-run skips it,
    except the last: the ``STORED`` write right after records it (one script call per
    job fewer); the caller records it itself when the manifest fails.
    """
    done = {obj.source_index for obj in objects}
    pending = [i for i in range(len(record.result_urls)) if i not in done]
    prompt = str(record.request.get("prompt", ""))
    metadata = object_metadata(
        job_id=record.job_id, evolink_task_id=record.evolink_task_id or "", prompt=prompt
    )
    for index, url in enumerate(record.result_urls):
        if index in done:
            continue
        with open_result(
            url,
            policy=rt.url_policy(),
            max_bytes=rt.settings.max_result_bytes,
            timeout_s=rt.settings.download_timeout_s,
            chunk_bytes=rt.settings.download_chunk_bytes,
            client=rt.result_client(),
        ) as stream:
            stored = rt.objects().put_image_stream(
                object_key_stem(rt.settings.s3_prefix, record.job_id, index),
                stream.iter_chunks(),
                max_bytes=rt.settings.max_result_bytes,
                metadata=metadata,
                source_index=index,
                length=stream.content_length,
            )
        objects.append(stored)
        metrics.bytes_stored(stored.size)
        if index != pending[-1]:
            rt.store.apply(lifecycle.OBJECT_STORED, record.job_id, objects=objects)
