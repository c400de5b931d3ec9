"""A job whose record vanished from the store: rescued from its messages, or reported lost.

Real Redis, emulator and S3; the record is deleted (as a flush would) between stages.
"""

from __future__ import annotations

import json
import time

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers.callbacks import CallbackOutcome, callback_token, receive_callback
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages import poll as poll_stage
from nanobanana_queue.workers.stages.download import download
from nanobanana_queue.workers.stages.rescue import RECORD_LOST
from nanobanana_queue.workers.stages.steps import Message, Poll
from nanobanana_queue.workers.stages.submit import submit
from tests.support.s3_server import S3Server
from tests.workers.stages.conftest import StepLog, submitted_job, wait_task_final


def _vanish(rt: Runtime, job_id: str) -> None:
    rt.redis.delete(rt.store.key(job_id))


def _manifest(s3_server: S3Server, job_id: str) -> dict[str, object]:
    client = s3_server.minio()
    return dict(
        json.loads(client.get_object(s3_server.bucket, f"images/{job_id}/manifest.json").read())
    )


def _drive(rt: Runtime, steps: StepLog, job_id: str) -> str:
    """Run the scheduled polls and the download until the job ends."""
    outcome = ""
    for _ in range(600):
        record = rt.store.require(job_id)
        if record.is_terminal:
            return outcome
        if record.state is JobState.DOWNLOADING:
            outcome = steps(download(rt, job_id))
        else:
            _, _, token = steps.last("poll")
            outcome = steps(poll_stage.poll(rt, job_id, token))
            time.sleep(0.05)  # the emulator's task runs on (time scale 0.01)
    raise AssertionError(f"job {job_id} never ended (last outcome {outcome})")


def test_every_poll_message_after_the_create_carries_the_job_and_task_ids(
    rt: Runtime, steps: StepLog
) -> None:
    record = submitted_job(rt, steps)
    assert steps.task_ids[record.job_id] == record.evolink_task_id


def test_a_poll_for_a_vanished_job_rescues_it_into_s3_with_a_recovered_manifest(
    rt: Runtime, steps: StepLog, emulator_server, s3_server: S3Server
) -> None:
    record = submitted_job(rt, steps)
    task_id = record.evolink_task_id
    assert task_id
    wait_task_final(emulator_server, task_id)
    _vanish(rt, record.job_id)

    outcome = steps(poll_stage.poll(rt, record.job_id, "stale-token", evolink_task_id=task_id))

    # The rescue re-records the job and asks for its poll (stages never run each other)
    assert outcome == "rescued"
    _, _, token = steps.last("poll")
    assert steps.task_ids[record.job_id] == task_id
    assert steps(poll_stage.poll(rt, record.job_id, token, evolink_task_id=task_id)) == (
        "completed"
    )
    assert steps.calls[-1] == ("download", record.job_id)
    assert steps.task_ids[record.job_id] == task_id  # the download message carries it too
    assert steps(download(rt, record.job_id)) == "stored"
    stored = rt.store.require(record.job_id)
    assert stored.state is JobState.STORED and stored.recovered_at is not None
    assert stored.objects and stored.objects[0].key.startswith(f"images/{record.job_id}/0.")
    manifest = _manifest(s3_server, record.job_id)
    assert manifest["recovered"] is True and manifest["request"] is None
    assert manifest["evolink_task_id"] == task_id and manifest["recovered_at"]


def test_a_second_message_for_the_same_vanished_job_never_rescues_it_twice(
    rt: Runtime, steps: StepLog, emulator_server
) -> None:
    record = submitted_job(rt, steps)
    task_id = record.evolink_task_id
    assert task_id
    wait_task_final(emulator_server, task_id)
    _vanish(rt, record.job_id)
    first = steps(poll_stage.poll(rt, record.job_id, "old", evolink_task_id=task_id))
    second = steps(poll_stage.poll(rt, record.job_id, "old", evolink_task_id=task_id))
    assert first == "rescued"
    assert second == "stale_token"  # the rescued record's chain is the rescue's poll only
    creates = emulator_server.stats()["creates_accepted"]
    assert creates == 1  # a rescue never creates


def test_a_download_for_a_vanished_job_rescues_it_through_a_fresh_poll(
    rt: Runtime, steps: StepLog, emulator_server, s3_server: S3Server
) -> None:
    record = submitted_job(rt, steps)
    task_id = record.evolink_task_id
    assert task_id
    wait_task_final(emulator_server, task_id)
    _, _, token = steps.last("poll")
    assert steps(poll_stage.poll(rt, record.job_id, token)) == "completed"
    _vanish(rt, record.job_id)

    assert steps(download(rt, record.job_id, evolink_task_id=task_id)) == "rescued"
    assert steps.last("poll")[1] == record.job_id  # a fresh poll: the links died with the record
    assert _drive(rt, steps, record.job_id) == "stored"
    assert _manifest(s3_server, record.job_id)["recovered"] is True


def test_a_rescued_job_still_generating_keeps_polling_until_stored(
    make_rt, steps: StepLog, emulator_server
) -> None:
    rt = make_rt()
    record = submitted_job(rt, steps)
    _vanish(rt, record.job_id)  # at once: the task is most likely still running
    outcome = steps(poll_stage.poll(rt, record.job_id, "x", evolink_task_id=record.evolink_task_id))
    assert outcome == "rescued"
    assert _drive(rt, steps, record.job_id) == "stored"


def test_a_submit_for_a_vanished_job_reports_it_lost_and_status_answers(
    rt: Runtime, steps: StepLog
) -> None:
    from tests.workers.stages.conftest import new_job

    job_id = new_job(rt)
    _vanish(rt, job_id)
    assert steps(submit(rt, job_id)) == "lost"
    record = rt.store.require(job_id)
    assert record.state is JobState.FAILED and record.error is not None
    assert record.error.code == RECORD_LOST and "nothing was paid" in record.error.message
    assert steps.calls == []


def test_a_poll_without_a_task_id_for_a_vanished_job_reports_it_lost(
    rt: Runtime, steps: StepLog
) -> None:
    record = submitted_job(rt, steps)
    _vanish(rt, record.job_id)
    assert steps(poll_stage.poll(rt, record.job_id, "old")) == "lost"
    lost = rt.store.require(record.job_id)
    assert lost.error is not None and lost.error.code == RECORD_LOST


def test_a_message_for_a_job_whose_record_expired_after_storing_changes_nothing(
    rt: Runtime, steps: StepLog, emulator_server
) -> None:
    record = submitted_job(rt, steps)
    assert record.evolink_task_id
    wait_task_final(emulator_server, record.evolink_task_id)
    assert _drive(rt, steps, record.job_id) == "stored"
    _vanish(rt, record.job_id)  # as retention would
    outcome = steps(poll_stage.poll(rt, record.job_id, "x", evolink_task_id=record.evolink_task_id))
    assert outcome == "gone_stored"
    assert rt.store.get(record.job_id) is None


def test_a_verified_callback_for_a_vanished_job_sends_a_poll_carrying_the_task_id(
    make_rt, steps: StepLog, emulator_server
) -> None:
    rt = make_rt(public_callback_url="http://127.0.0.1:9/cb", callback_secret="s3cret")
    record = submitted_job(rt, steps)
    assert record.evolink_task_id
    wait_task_final(emulator_server, record.evolink_task_id)
    _vanish(rt, record.job_id)
    sent: list[Message] = []
    body = json.dumps({"id": record.evolink_task_id, "status": "completed"}).encode()

    def deliver() -> CallbackOutcome:
        return receive_callback(
            rt.settings,
            rt.store,
            sent.append,
            job_id=record.job_id,
            token=callback_token("s3cret", record.job_id),
            body=body,
        )

    assert deliver() is CallbackOutcome.POLL_SENT
    assert deliver() is CallbackOutcome.DUPLICATE
    assert sent == [Poll(record.job_id, "", evolink_task_id=record.evolink_task_id)]
    job_id, token, task_id = record.job_id, "", record.evolink_task_id
    assert steps(poll_stage.poll(rt, job_id, token, evolink_task_id=task_id)) == "rescued"
    assert _drive(rt, steps, job_id) == "stored"


def test_status_falls_back_to_the_manifest_after_the_record_expired(
    rt: Runtime, steps: StepLog, emulator_server
) -> None:
    record = submitted_job(rt, steps)
    assert record.evolink_task_id
    wait_task_final(emulator_server, record.evolink_task_id)
    assert _drive(rt, steps, record.job_id) == "stored"
    before = rt.store.require(record.job_id)
    _vanish(rt, record.job_id)

    producer = Producer(rt.settings, runtime=rt)
    status = producer.status(record.job_id)
    assert status.state is JobState.STORED
    assert status.evolink_task_id == before.evolink_task_id
    assert status.objects == before.objects
    assert status.request == before.request
    assert [i.key for i in producer.results(record.job_id)] == [o.key for o in before.objects]


def test_a_rescued_job_keeps_its_producer_so_its_owner_still_finds_it(
    rt: Runtime, steps: StepLog, emulator_server
) -> None:
    # Given alice's job, generating, whose record then vanishes
    producer = Producer(rt.settings, runtime=rt)
    job_id = producer.enqueue({"prompt": "alice's"}, job_id="r1", producer="alice").job_id
    assert steps(submit(rt, job_id)) == "created"
    task_id = rt.store.require(job_id).evolink_task_id
    assert task_id
    _vanish(rt, job_id)

    # When a poll rescues it
    assert steps(poll_stage.poll(rt, job_id, "", evolink_task_id=task_id)) == "rescued"

    # Then the rebuilt record is still alice's (the id's prefix names her)
    assert rt.store.require(job_id).producer == "alice"
    assert producer.status(job_id).producer == "alice"


def test_a_rescue_refuses_a_task_owned_by_another_job(
    make_rt, steps: StepLog, emulator_server
) -> None:
    # Given bob's generating job, and alice's job whose record vanished
    rt = make_rt(public_callback_url="http://127.0.0.1:9/cb", callback_secret="s3cret")
    bob = submitted_job(rt, steps, prompt="bob's")
    alice = submitted_job(rt, steps, prompt="alice's")
    _vanish(rt, alice.job_id)
    sent: list[Message] = []

    # When a verified callback for alice's vanished job names bob's task
    outcome = receive_callback(
        rt.settings,
        rt.store,
        sent.append,
        job_id=alice.job_id,
        token=callback_token("s3cret", alice.job_id),
        body=json.dumps({"id": bob.evolink_task_id, "status": "completed"}).encode(),
    )

    # Then it is refused at the receiver, and a raw poll naming it cannot rescue either
    assert outcome is CallbackOutcome.REFUSED and sent == []
    label = steps(poll_stage.poll(rt, alice.job_id, "", evolink_task_id=bob.evolink_task_id))
    assert label == "refused_foreign_task"
    assert rt.store.get(alice.job_id) is None
    assert rt.store.require(bob.job_id).evolink_task_id == bob.evolink_task_id
