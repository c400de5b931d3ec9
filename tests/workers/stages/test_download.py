"""The download stage on real S3: stores once; a redelivered download changes nothing."""

from __future__ import annotations

from tests.support.emulator_server import EmulatorServer
from tests.support.s3_server import S3Server
from tests.workers.stages.conftest import StepLog, submitted_job, wait_task_final
from workers.jobs.state import JobState
from workers.runtime import Runtime
from workers.stages import download as download_stage
from workers.stages import poll as poll_stage


def test_a_completed_job_is_stored_once_and_a_redelivered_download_is_a_no_op(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer, s3_server: S3Server
) -> None:
    record = submitted_job(rt, steps)
    assert record.evolink_task_id
    wait_task_final(emulator_server, record.evolink_task_id)
    _, job_id, token = steps.last("poll")
    assert steps(poll_stage.poll(rt, job_id, token)) == "completed"
    assert steps.last("download") == ("download", job_id)
    assert steps(download_stage.download(rt, job_id)) == "stored"
    stored = rt.store.require(job_id)
    assert stored.state is JobState.STORED and len(stored.objects) == 1
    keys = s3_server.keys(f"images/{job_id}/")
    assert keys == sorted([stored.objects[0].key, f"images/{job_id}/manifest.json"])
    downloads = emulator_server.stats()["file_downloads"]
    # When the same download message is delivered again
    assert steps(download_stage.download(rt, job_id)) == "gone"
    assert emulator_server.stats()["file_downloads"] == downloads
    assert s3_server.keys(f"images/{job_id}/") == keys
