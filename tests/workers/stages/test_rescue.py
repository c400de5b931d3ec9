"""A job whose record vanished from the store: rescued from its messages, or reported lost.

Real Redis, emulator and S3; the record is deleted (as a flush would) between stages.
"""

from __future__ import annotations

import json
import time

from producers.api import Producer
from tests.support.s3_server import S3Server
from tests.workers.stages.conftest import RecordingScheduler, submitted_job, wait_task_final
from workers.callbacks import CallbackOutcome, callback_token, receive_callback
from workers.jobs.state import JobState
from workers.runtime import Runtime
from workers.stages import poll as poll_stage
from workers.stages.download import download
from workers.stages.rescue import RECORD_LOST
from workers.stages.submit import submit


def _vanish(rt: Runtime, job_id: str) -> None:
    rt.redis.delete(rt.store.key(job_id))


def _manifest(s3_server: S3Server, job_id: str) -> dict[str, object]:
    client = s3_server.minio()
    return dict(
        json.loads(client.get_object(s3_server.bucket, f"images/{job_id}/manifest.json").read())
    )


def _drive(rt: Runtime, sched: RecordingScheduler, job_id: str) -> str:
    """Run the scheduled polls and the download until the job ends."""
    outcome = ""
    for _ in range(600):
        record = rt.store.require(job_id)
        if record.is_terminal:
            return outcome
        if record.state is JobState.DOWNLOADING:
            outcome = download(rt, job_id, sched=sched)
        else:
            _, _, token = sched.last("poll")
            outcome = poll_stage.poll(rt, sched, job_id, token)
            time.sleep(0.05)  # the emulator's task runs on (time scale 0.01)
    raise AssertionError(f"job {job_id} never ended (last outcome {outcome})")


def test_every_poll_message_after_the_create_carries_the_job_and_task_ids(
    rt: Runtime, sched: RecordingScheduler
) -> None:
    record = submitted_job(rt, sched)
    assert sched.task_ids[record.job_id] == record.evolink_task_id


def test_a_poll_for_a_vanished_job_rescues_it_into_s3_with_a_recovered_manifest(
    rt: Runtime, sched: RecordingScheduler, emulator_server, s3_server: S3Server
) -> None:
    record = submitted_job(rt, sched)
    task_id = record.evolink_task_id
    assert task_id
    wait_task_final(emulator_server, task_id)
    _vanish(rt, record.job_id)

    outcome = poll_stage.poll(rt, sched, record.job_id, "stale-token", evolink_task_id=task_id)

    assert outcome == "rescued_completed"
    assert sched.calls[-1] == ("download", record.job_id)
    assert sched.task_ids[record.job_id] == task_id  # the download message carries it too
    assert download(rt, record.job_id, sched=sched) == "stored"
    stored = rt.store.require(record.job_id)
    assert stored.state is JobState.STORED and stored.recovered_at is not None
    assert stored.objects and stored.objects[0].key.startswith(f"images/{record.job_id}/0.")
    manifest = _manifest(s3_server, record.job_id)
    assert manifest["recovered"] is True and manifest["request"] is None
    assert manifest["evolink_task_id"] == task_id and manifest["recovered_at"]


def test_a_second_message_for_the_same_vanished_job_never_rescues_it_twice(
    rt: Runtime, sched: RecordingScheduler, emulator_server
) -> None:
    record = submitted_job(rt, sched)
    task_id = record.evolink_task_id
    assert task_id
    wait_task_final(emulator_server, task_id)
    _vanish(rt, record.job_id)
    first = poll_stage.poll(rt, sched, record.job_id, "old", evolink_task_id=task_id)
    second = poll_stage.poll(rt, sched, record.job_id, "old", evolink_task_id=task_id)
    assert first == "rescued_completed"
    assert second == "stale_downloading"
    creates = emulator_server.stats()["creates_accepted"]
    assert creates == 1  # a rescue never creates


def test_a_download_for_a_vanished_job_rescues_it_through_a_fresh_poll(
    rt: Runtime, sched: RecordingScheduler, emulator_server, s3_server: S3Server
) -> None:
    record = submitted_job(rt, sched)
    task_id = record.evolink_task_id
    assert task_id
    wait_task_final(emulator_server, task_id)
    _, _, token = sched.last("poll")
    assert poll_stage.poll(rt, sched, record.job_id, token) == "completed"
    _vanish(rt, record.job_id)

    assert download(rt, record.job_id, evolink_task_id=task_id, sched=sched) == "rescued_completed"
    assert _drive(rt, sched, record.job_id) == "stored"
    assert _manifest(s3_server, record.job_id)["recovered"] is True


def test_a_rescued_job_still_generating_keeps_polling_until_stored(
    make_rt, sched: RecordingScheduler, emulator_server
) -> None:
    rt = make_rt()
    record = submitted_job(rt, sched)
    _vanish(rt, record.job_id)  # at once: the task is most likely still running
    outcome = poll_stage.poll(rt, sched, record.job_id, "x", evolink_task_id=record.evolink_task_id)
    assert outcome.startswith("rescued_")
    assert _drive(rt, sched, record.job_id) == "stored"


def test_a_submit_for_a_vanished_job_reports_it_lost_and_status_answers(
    rt: Runtime, sched: RecordingScheduler
) -> None:
    from tests.workers.stages.conftest import new_job

    job_id = new_job(rt)
    _vanish(rt, job_id)
    assert submit(rt, sched, job_id) == "lost"
    record = rt.store.require(job_id)
    assert record.state is JobState.FAILED and record.error is not None
    assert record.error.code == RECORD_LOST and "nothing was paid" in record.error.message
    assert sched.calls == []


def test_a_poll_without_a_task_id_for_a_vanished_job_reports_it_lost(
    rt: Runtime, sched: RecordingScheduler
) -> None:
    record = submitted_job(rt, sched)
    _vanish(rt, record.job_id)
    assert poll_stage.poll(rt, sched, record.job_id, "old") == "lost"
    lost = rt.store.require(record.job_id)
    assert lost.error is not None and lost.error.code == RECORD_LOST


def test_a_message_for_a_job_whose_record_expired_after_storing_changes_nothing(
    rt: Runtime, sched: RecordingScheduler, emulator_server
) -> None:
    record = submitted_job(rt, sched)
    assert record.evolink_task_id
    wait_task_final(emulator_server, record.evolink_task_id)
    assert _drive(rt, sched, record.job_id) == "stored"
    _vanish(rt, record.job_id)  # as retention would
    outcome = poll_stage.poll(rt, sched, record.job_id, "x", evolink_task_id=record.evolink_task_id)
    assert outcome == "gone_stored"
    assert rt.store.get(record.job_id) is None


def test_a_verified_callback_for_a_vanished_job_sends_a_poll_carrying_the_task_id(
    make_rt, sched: RecordingScheduler, emulator_server
) -> None:
    rt = make_rt(public_callback_url="http://127.0.0.1:9/cb", callback_secret="s3cret")
    record = submitted_job(rt, sched)
    assert record.evolink_task_id
    wait_task_final(emulator_server, record.evolink_task_id)
    _vanish(rt, record.job_id)
    sent: list[tuple[str, str, str | None]] = []
    body = json.dumps({"id": record.evolink_task_id, "status": "completed"}).encode()

    def deliver() -> CallbackOutcome:
        return receive_callback(
            rt.settings,
            rt.store,
            lambda j, t, task: sent.append((j, t, task)),
            job_id=record.job_id,
            token=callback_token("s3cret", record.job_id),
            body=body,
        )

    assert deliver() is CallbackOutcome.POLL_SENT
    assert deliver() is CallbackOutcome.DUPLICATE
    assert sent == [(record.job_id, "", record.evolink_task_id)]
    job_id, token, task_id = sent[0]
    assert poll_stage.poll(rt, sched, job_id, token, evolink_task_id=task_id).startswith("rescued")
    assert _drive(rt, sched, job_id) == "stored"


def test_status_falls_back_to_the_manifest_after_the_record_expired(
    rt: Runtime, sched: RecordingScheduler, emulator_server
) -> None:
    record = submitted_job(rt, sched)
    assert record.evolink_task_id
    wait_task_final(emulator_server, record.evolink_task_id)
    assert _drive(rt, sched, record.job_id) == "stored"
    before = rt.store.require(record.job_id)
    _vanish(rt, record.job_id)

    producer = Producer(rt.settings, runtime=rt)
    status = producer.status(record.job_id)
    assert status.state is JobState.STORED
    assert status.evolink_task_id == before.evolink_task_id
    assert status.objects == before.objects
    assert status.request == before.request
    assert [i.key for i in producer.results(record.job_id)] == [o.key for o in before.objects]
