"""No job can ever hold a paid task it did not create, through any entry point.

The adoption attack table: alice's job ``alice~a1`` lost its create's answer and waits in
``outcome_unknown`` (its own task exists, paid, unseen). An attacker then names another
task for it through each entry point — a callback POSTed to the ingress over HTTP,
``nbq adopt``, ``Producer.adopt`` and a raw ``nbq.adopt`` from a bare Celery client —
and every adoption message that results runs through the worker's adopt stage. Every
attack is refused: the job never holds the task, no image is stored under it, no create
is paid, no credit recorded twice, and the victim task's own job is unchanged.

Real parts: a test-owned Redis (store and broker), the emulator over HTTP; the ingress in
process (FastAPI's TestClient), the CLI in process (CliRunner).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.cli import recover_cmd
from nanobanana_queue.producers.cli.main import app as nbq
from nanobanana_queue.producers.errors import ProducerError
from nanobanana_queue.producers.ingress.app import create_app as create_ingress
from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.app import create_app as create_celery_app
from nanobanana_queue.workers.callbacks import callback_token
from nanobanana_queue.workers.jobs.owners import owners_of
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.resilience.credits import CreditLedger
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.adopt import adopt_message
from nanobanana_queue.workers.stages.poll import poll
from nanobanana_queue.workers.stages.steps import Adopt
from nanobanana_queue.workers.storage.manifest import manifest_key
from tests.support.emulator_server import EmulatorServer
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server
from tests.workers.stages.conftest import StepLog, claim_submit, set_fields, wait_task_final

SECRET = "callback-secret-for-tests"
ATTACKER = "alice~a1"


@dataclass
class Scene:
    rt: Runtime
    producer: Producer
    ingress: TestClient
    emulator: EmulatorServer
    steps: StepLog
    #: Every ``nbq_ownership_refused_total`` event: (entry, reason).
    refused: list[tuple[str, str]]

    def submit(self, job_id: str, producer: str, *, lose_answer: bool = False) -> JobRecord:
        """Enqueue ``job_id`` and run its submit (its create's answer lost if asked)."""
        if lose_answer:
            self.emulator.add_fault(endpoint="create", action="drop_after_create", count=1)
        handle = self.producer.enqueue(
            {"prompt": f"{producer}'s picture"}, job_id=job_id, producer=producer
        )
        self.steps(submit_stage.submit(self.rt, handle.job_id))
        return self.rt.store.require(handle.job_id)

    def api_task(self, **fault: Any) -> str:
        """A task made straight on the API (no job of ours), ended."""
        if fault:
            self.emulator.add_fault(endpoint="create", action="fail_task", count=1, **fault)
        answer = httpx.post(
            f"{self.emulator.url}/v1/images/generations",
            json={"prompt": "made elsewhere", "model": "nano-banana-2-beta"},
            headers=self.emulator.auth_headers,
        )
        task_id = str(answer.json()["id"])
        wait_task_final(self.emulator, task_id)
        return task_id

    def run_adopt_messages(self) -> list[str]:
        """Every ``nbq.adopt`` waiting on the poll queue, run as the worker runs it."""
        broker = redis.Redis.from_url(self.rt.settings.broker_url)
        labels = []
        while isinstance(raw := broker.rpop("poll"), bytes):
            message = json.loads(raw)
            if message["headers"]["task"] != "nbq.adopt":
                continue
            kwargs = json.loads(base64.b64decode(message["body"]))[1]
            labels.append(self.steps(adopt_message(self.rt, **kwargs)))
        return labels

    @property
    def ledger(self) -> CreditLedger:
        return CreditLedger(self.rt.redis, prefix=self.rt.settings.key_prefix)

    def creates_paid(self) -> int:
        return int(self.emulator.stats()["creates_accepted"])


#: The session Redis's database these tests own (flushed before each).
DB = 12


@pytest.fixture
def scene(
    session_redis: RedisServer,
    session_emulator: EmulatorServer,
    session_s3: S3Server,
    steps: StepLog,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Scene]:
    """Session servers (fast): this test's own Redis database, a reset emulator, its own
    S3 prefix."""
    url = session_redis.url.rsplit("/", 1)[0] + f"/{DB}"
    redis.Redis.from_url(url).flushdb()
    session_emulator.reset()
    rt = Runtime.from_settings(
        Settings(
            broker_url=url,
            evolink_base_url=session_emulator.url,
            evolink_api_key=session_emulator.api_key,
            result_url_private_hosts=["127.0.0.1"],
            result_url_allow_http=True,
            s3_endpoint=session_s3.endpoint,
            s3_access_key=session_s3.access_key,
            s3_secret_key=session_s3.secret_key,
            s3_bucket=session_s3.bucket,
            s3_prefix=f"t{uuid.uuid4().hex[:10]}",
            default_estimated_time_s=0.3,
            public_callback_url="http://127.0.0.1:9",  # the emulator's deliveries fail
            callback_secret=SECRET,
            producer_secret="producer-master-secret",
        )
    )
    producer = Producer(rt.settings, celery_app=create_celery_app(rt.settings), runtime=rt)
    ingress = TestClient(create_ingress(rt.settings, producer=producer))
    refused: list[tuple[str, str]] = []
    monkeypatch.setattr(
        metrics, "ownership_refused", lambda entry, reason: refused.append((entry, reason))
    )
    yield Scene(rt, producer, ingress, session_emulator, steps, refused)
    ingress.close()
    rt.redis.close()


# -- the four entry points: each returns how it answered, then runs what it sent ------------
def via_callback(scene: Scene, task_id: str, token: str | None = None) -> str:
    record = scene.rt.store.require(ATTACKER)
    token = token or callback_token(SECRET, ATTACKER, record.create_seq)
    answer = scene.ingress.post(
        f"/v1/callbacks/evolink/{ATTACKER}?token={token}",
        content=json.dumps({"id": task_id, "status": "completed"}).encode(),
    )
    return f"{answer.status_code} {answer.json()['outcome']} {scene.run_adopt_messages()}"


def via_cli(scene: Scene, task_id: str) -> str:
    mp = pytest.MonkeyPatch()
    mp.setattr(recover_cmd, "_producer", lambda: scene.producer)
    try:
        result = CliRunner().invoke(nbq, ["adopt", ATTACKER, task_id, "--wait", "0", "--force"])
    finally:
        mp.undo()
    return f"exit {result.exit_code} {scene.run_adopt_messages()}"


def via_producer(scene: Scene, task_id: str) -> str:
    try:
        scene.producer.adopt(ATTACKER, task_id)
    except ProducerError as exc:
        return f"raised {type(exc).__name__}"
    return f"sent {scene.run_adopt_messages()}"


def via_raw_message(scene: Scene, task_id: str) -> str:
    """A bare Celery client on the broker, claiming to be a person."""
    client = Celery(broker=scene.rt.settings.broker_url)
    client.conf.task_serializer = "json"
    client.send_task(
        "nbq.adopt",
        kwargs={"job_id": ATTACKER, "task_id": task_id, "source": "person"},
        queue="poll",
    )
    client.close()
    return f"sent {scene.run_adopt_messages()}"


ENTRIES = {
    "callback": via_callback,
    "nbq_adopt": via_cli,
    "producer_adopt": via_producer,
    "raw_nbq_adopt": via_raw_message,
}


# -- the attacks: each sets up its task (and the victim job, if any) ------------------------
def another_producers_task(scene: Scene) -> tuple[str, str | None]:
    bob = scene.submit("b1", "bob")
    return str(bob.evolink_task_id), bob.job_id


def another_job_of_the_same_producer(scene: Scene) -> tuple[str, str | None]:
    sibling = scene.submit("a2", "alice")
    return str(sibling.evolink_task_id), sibling.job_id


def a_task_created_before_the_job(scene: Scene) -> tuple[str, str | None]:
    task_id = scene.api_task()
    # The job's first create was sent well after that task was made (more than the
    # tolerated clock skew): the record says so, as if the job had been created later.
    set_fields(scene.rt, ATTACKER, first_create_at=time.time() + 120)
    return task_id, None


ATTACKS = {
    "another_producers_task": another_producers_task,
    "another_job_of_the_same_producer": another_job_of_the_same_producer,
    "a_task_created_before_the_job": a_task_created_before_the_job,
}


def attacker_waiting(scene: Scene) -> JobRecord:
    record = scene.submit("a1", "alice", lose_answer=True)
    assert record.job_id == ATTACKER and record.state is JobState.OUTCOME_UNKNOWN
    return record


def assert_untouched(scene: Scene, before: JobRecord, task_id: str) -> None:
    """Alice's job still waits on its own task: nothing taken, paid or stored under it."""
    manifest = manifest_key(scene.rt.settings.s3_prefix, ATTACKER)
    assert not scene.rt.objects().exists(manifest)
    after = scene.rt.store.require(ATTACKER)
    assert after.evolink_task_id != task_id and after.state is JobState.OUTCOME_UNKNOWN
    assert (after.paid_creates, after.credits_paid) == (before.paid_creates, 0.0)
    assert not any(
        getattr(step, "job_id", None) == ATTACKER and type(step).__name__ in ("Poll", "Download")
        for step in scene.steps.steps
    )


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("attack", ATTACKS)
def test_a_task_that_is_not_the_jobs_is_refused_through_every_entry(
    scene: Scene, attack: str, entry: str
) -> None:
    # Given alice's job waiting on a lost create, and a task that is not its own
    before = attacker_waiting(scene)
    task_id, victim_id = ATTACKS[attack](scene)
    victim = scene.rt.store.require(victim_id) if victim_id else None
    paid = scene.creates_paid()

    spent = {who: scene.ledger.spent_today(producer=who) for who in ("alice", "bob")}

    # When an attacker names that task for alice's job
    answer = ENTRIES[entry](scene, task_id)

    # Then it is refused: the job does not hold it, nothing paid, the victim unchanged
    assert "adopted" not in answer and "exit 0" not in answer, answer
    assert_untouched(scene, before, task_id)
    assert scene.creates_paid() == paid
    if victim is not None:
        now = scene.rt.store.require(victim.job_id)
        assert (now.state, now.evolink_task_id, now.paid_creates, now.credits_paid) == (
            victim.state,
            victim.evolink_task_id,
            victim.paid_creates,
            victim.credits_paid,
        )
    assert {who: scene.ledger.spent_today(producer=who) for who in spent} == spent  # once
    assert scene.refused, "counted in nbq_ownership_refused_total"


@pytest.mark.parametrize("entry", ENTRIES)
def test_adopting_a_failed_task_ends_the_job_failed_and_never_pays(
    scene: Scene, entry: str
) -> None:
    # Given alice's job waiting on a lost create whose task then failed (retryable)
    scene.emulator.add_fault(
        endpoint="create", action="fail_task", count=1, code="generation_timeout"
    )
    before = attacker_waiting(scene)
    tasks = scene.emulator._control("GET", "tasks")
    task_id = str(tasks[-1]["id"])
    wait_task_final(scene.emulator, task_id)
    paid = scene.creates_paid()

    # When that task is adopted (no --yes)
    ENTRIES[entry](scene, task_id)

    # Then the job ends failed with the task's own reason; no new create was sent
    after = scene.rt.store.require(ATTACKER)
    assert after.state is JobState.FAILED and after.error is not None
    assert after.error.code == "generation_timeout"
    assert after.evolink_task_id == task_id and after.paid_creates == before.paid_creates + 1
    assert scene.creates_paid() == paid
    assert not any(type(step).__name__ == "Submit" for step in scene.steps.steps)


def test_a_person_who_accepts_paying_twice_gets_the_failed_task_recreated(scene: Scene) -> None:
    scene.emulator.add_fault(
        endpoint="create", action="fail_task", count=1, code="generation_timeout"
    )
    attacker_waiting(scene)
    task_id = str(scene.emulator._control("GET", "tasks")[-1]["id"])
    wait_task_final(scene.emulator, task_id)

    scene.producer.adopt(ATTACKER, task_id, accept_may_pay_twice=True)
    assert scene.run_adopt_messages() == ["adopted"]
    _, job_id, token = scene.steps.last("poll")  # the adoption's poll sees the task failed
    assert scene.steps(poll(scene.rt, job_id, token)) == "recreate"

    assert scene.steps.last("submit") == ("submit", ATTACKER)  # the re-create, consented


def test_a_replayed_callback_of_an_earlier_round_is_refused(scene: Scene) -> None:
    before = attacker_waiting(scene)
    own_task = str(scene.emulator._control("GET", "tasks")[-1]["id"])
    old_round = callback_token(SECRET, ATTACKER, before.create_seq)
    set_fields(scene.rt, ATTACKER, create_seq=before.create_seq + 1)  # a later round

    assert via_callback(scene, own_task, token=old_round) == "403 refused []"
    assert_untouched(scene, before, own_task)


@pytest.mark.parametrize(
    "token",
    [
        callback_token("not-the-secret", ATTACKER, 1),
        callback_token(SECRET, "alice~a2", 1),  # another job's token
        callback_token(SECRET, ATTACKER, 1, expires_at=int(time.time()) - 1),  # expired
        "1.99999999999.deadbeef",
    ],
    ids=["wrong_secret", "other_job", "expired", "garbage"],
)
def test_a_forged_callback_token_is_rejected(scene: Scene, token: str) -> None:
    before = attacker_waiting(scene)
    own_task = str(scene.emulator._control("GET", "tasks")[-1]["id"])

    assert via_callback(scene, own_task, token=token) == "404 rejected []"
    assert_untouched(scene, before, own_task)


def test_the_jobs_own_task_is_still_adopted_through_its_callback(scene: Scene) -> None:
    # The refusals above must not cost the legitimate path.
    attacker_waiting(scene)
    own_task = str(scene.emulator._control("GET", "tasks")[-1]["id"])
    wait_task_final(scene.emulator, own_task)

    assert via_callback(scene, own_task) == "202 adopt_sent ['adopted']"
    assert scene.rt.store.require(ATTACKER).state is JobState.GENERATING
    # The adoption's poll (its next message) finds the task completed
    _, job_id, token = scene.steps.last("poll")
    assert scene.steps(poll(scene.rt, job_id, token)) == "completed"
    record = scene.rt.store.require(ATTACKER)
    assert record.state is JobState.DOWNLOADING and record.evolink_task_id == own_task
    assert record.paid_creates == 1


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_noted_early_callback_naming_a_task_not_the_jobs_is_never_adopted(
    scene: Scene, attack: str
) -> None:
    # Given alice's job whose create is in flight (submitting), and a task not its own
    handle = scene.producer.enqueue({"prompt": "alice's picture"}, job_id="a1", producer="alice")
    claimed = claim_submit(scene.rt, handle.job_id)
    task_id, _ = ATTACKS[attack](scene)

    # When a callback naming that task arrives before the create's answer...
    answer = scene.ingress.post(
        f"/v1/callbacks/evolink/{ATTACKER}?token={callback_token(SECRET, ATTACKER)}",
        content=json.dumps({"id": task_id, "status": "completed"}).encode(),
    )
    # ...and then the create's answer is lost (submit adopts a noted task at once)
    step = submit_stage.hold_unknown_outcome(
        scene.rt, claimed, from_state=JobState.SUBMITTING, detail="answer lost"
    )
    label = (
        scene.steps(adopt_message(scene.rt, ATTACKER, task_id))
        if isinstance(step, Adopt)
        else step.label
    )

    # Then the task is refused at the receiver (owned) or by the worker (too old)
    assert answer.status_code in (403, 409)
    assert "adopted" not in label
    record = scene.rt.store.require(ATTACKER)
    assert record.evolink_task_id != task_id and record.paid_creates == 0
    assert record.callback_task_id is None  # a refused claim is not kept for a re-send


def test_nbq_adopt_asks_when_the_task_was_made_long_after_the_jobs_last_create(
    scene: Scene,
) -> None:
    # Given alice's waiting job, and an unowned task made much later than its last create
    before = attacker_waiting(scene)
    task_id = scene.api_task()
    earlier = time.time() - 3600
    set_fields(scene.rt, ATTACKER, first_create_at=earlier - 60, t_submitting=earlier)

    # When a person runs nbq adopt and answers no
    mp = pytest.MonkeyPatch()
    mp.setattr(recover_cmd, "_producer", lambda: scene.producer)
    try:
        result = CliRunner().invoke(nbq, ["adopt", ATTACKER, task_id, "--wait", "0"], input="n\n")
    finally:
        mp.undo()

    # Then it showed the job's prompt and the task's time, asked, and sent nothing
    assert result.exit_code == 1
    for words in ("alice's picture", "created", "Attach it anyway?"):
        assert words in result.output, result.output
    assert scene.run_adopt_messages() == []
    assert_untouched(scene, before, task_id)


@pytest.mark.parametrize("entry", ["producer_adopt", "raw_nbq_adopt"])
def test_a_task_the_job_already_counted_is_never_counted_again(scene: Scene, entry: str) -> None:
    # Given alice's waiting job that had replaced an earlier task (failed, counted then)
    before = attacker_waiting(scene)
    old = scene.api_task(code="generation_timeout")
    owners_of(scene.rt.store).record(old, ATTACKER)
    set_fields(scene.rt, ATTACKER, previous_task_ids=[old], paid_creates=1, credits_paid=1.6)
    paid = scene.creates_paid()

    # When that old task is named again
    ENTRIES[entry](scene, old)

    # Then the job ends failed with its reason: nothing paid, nothing counted twice
    after = scene.rt.store.require(ATTACKER)
    assert after.state is JobState.FAILED and after.error is not None
    assert (after.paid_creates, after.credits_paid) == (1, 1.6)
    assert scene.creates_paid() == paid and before.paid_creates == 0
    assert scene.ledger.spent_today(producer="alice") == 0


def test_a_callback_naming_a_task_the_job_replaced_is_refused(scene: Scene) -> None:
    before = attacker_waiting(scene)
    old = scene.api_task()
    set_fields(scene.rt, ATTACKER, previous_task_ids=[old])
    assert scene.steps(adopt_message(scene.rt, ATTACKER, old)) == "refused_stale_round"
    assert_untouched(scene, before, old)
