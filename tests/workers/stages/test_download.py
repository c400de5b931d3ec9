"""The download stage on real S3: stores once; a redelivered download changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from nanobanana_queue.workers.errors import StorageError
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages import download as download_stage
from nanobanana_queue.workers.stages import poll as poll_stage
from nanobanana_queue.workers.stages.steps import Retry
from tests.support.emulator_server import EmulatorServer
from tests.support.s3_server import S3Server
from tests.workers.stages.conftest import StepLog, submitted_job, wait_task_final


def completed_job(rt: Runtime, steps: StepLog, emulator: EmulatorServer) -> str:
    """A job whose API task completed and whose poll saw it: next, the download."""
    record = submitted_job(rt, steps)
    assert record.evolink_task_id
    wait_task_final(emulator, record.evolink_task_id)
    _, job_id, token = steps.last("poll")
    assert steps(poll_stage.poll(rt, job_id, token)) == "completed"
    return str(job_id)


def test_a_completed_job_is_stored_once_and_a_redelivered_download_is_a_no_op(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer, s3_server: S3Server
) -> None:
    job_id = completed_job(rt, steps, emulator_server)
    assert steps.last("download") == ("download", job_id)
    assert steps(download_stage.download(rt, job_id)) == "stored"
    stored = rt.store.require(job_id)
    assert stored.state is JobState.STORED and len(stored.objects) == 1
    # A stored record keeps no poll chain and no result links (they end with the job)
    assert (stored.poll_token, stored.next_poll_at, stored.result_urls) == (None, None, [])
    keys = s3_server.keys(f"images/{job_id}/")
    assert keys == sorted([stored.objects[0].key, f"images/{job_id}/manifest.json"])
    downloads = emulator_server.stats()["file_downloads"]
    # When the same download message is delivered again
    assert steps(download_stage.download(rt, job_id)) == "gone"
    assert emulator_server.stats()["file_downloads"] == downloads
    assert s3_server.keys(f"images/{job_id}/") == keys


def test_a_failed_manifest_keeps_the_stored_image_on_the_job_so_the_retry_skips_it(
    rt: Runtime,
    steps: StepLog,
    emulator_server: EmulatorServer,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a completed job, and S3 refusing the manifest once
    job_id = completed_job(rt, steps, emulator_server)
    objects = rt.objects()
    put_json = objects.put_json
    refusals: list[str] = []

    def refuse_once(key: str, data: Any) -> None:
        if not refusals:
            refusals.append(key)
            raise StorageError("manifest refused")
        put_json(key, data)

    monkeypatch.setattr(objects, "put_json", refuse_once)
    # When the download runs: the image lands, the manifest fails
    step = download_stage.download(rt, job_id)
    assert isinstance(step, Retry) and refusals
    # Then the image is on the job, and the retry stores the job without fetching it again
    assert len(rt.store.require(job_id).objects) == 1
    downloads = emulator_server.stats()["file_downloads"]
    assert steps(download_stage.download(rt, job_id, retries=1)) == "stored"
    assert emulator_server.stats()["file_downloads"] == downloads
    stored = rt.store.require(job_id)
    assert stored.state is JobState.STORED and len(stored.objects) == 1


def test_a_one_image_download_writes_the_job_once(
    rt: Runtime,
    steps: StepLog,
    emulator_server: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = completed_job(rt, steps, emulator_server)
    writes: list[str] = []
    apply = rt.store.apply

    def recorded(transition: Any, *args: Any, **kwargs: Any) -> Any:
        writes.append(transition.name)
        return apply(transition, *args, **kwargs)

    monkeypatch.setattr(rt.store, "apply", recorded)
    assert steps(download_stage.download(rt, job_id)) == "stored"
    # The image is recorded by the stored write itself, not by a note before it
    assert writes == ["stored"]
    assert len(rt.store.require(job_id).objects) == 1
