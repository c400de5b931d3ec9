"""Producer identity on the broker: a raw ``nbq.generate`` speaks for a producer only with
proof (workers/producer_keys.py, docs/security.md).

The sender is a separate Python process with a bare Celery client that imports nothing of
ours (only ``celery``, ``hmac``, ``hashlib``); each message it sends is read back from the
broker, checked by the consumer guard and run through the worker's intake, as
``nbq.generate`` runs it. Real Redis (store and broker).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess  # nosec B404 - a fixed script, no shell
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from nanobanana_queue.producers.api import Producer, generate_step
from nanobanana_queue.workers.app import create_app as create_celery_app
from nanobanana_queue.workers.guard.inspect import check_body
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.producer_keys import producer_key
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages.intake import intake
from tests.support.redis_server import RedisServer

#: Raw senders are Python processes of their own (send_raw).
pytestmark = [pytest.mark.integration]

MASTER = "producer-master-secret"

#: The outside sender: standard library and celery only.
SENDER = r"""
import hashlib, hmac, json, sys
from celery import Celery

broker, kwargs, key = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if key:  # the proof is over the stored id: <producer>~<job_id>
    stored = kwargs["producer"] + "~" + kwargs["job_id"]
    message = ("nbq.generate:" + stored).encode()
    kwargs["producer_proof"] = hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
app = Celery(broker=broker)
app.conf.task_serializer = "json"
app.send_task("nbq.generate", kwargs=kwargs, queue="submit")
"""


#: The session Redis's database these tests own (flushed before each).
DB = 13


@pytest.fixture
def make_rt(session_redis: RedisServer) -> Iterator[Callable[..., Runtime]]:
    """``make_rt(**settings)``: a Runtime on this test's Redis database (store and broker)."""
    url = session_redis.url.rsplit("/", 1)[0] + f"/{DB}"
    redis.Redis.from_url(url).flushdb()
    made: list[Runtime] = []

    def make(**overrides: Any) -> Runtime:
        made.append(Runtime.from_settings(Settings(broker_url=url, **overrides)))
        return made[-1]

    yield make
    for each in made:
        each.redis.close()


@pytest.fixture
def rt(make_rt: Callable[..., Runtime]) -> Runtime:
    return make_rt(producer_secret=MASTER)


def send_raw(rt: Runtime, kwargs: dict[str, Any], key: str = "") -> dict[str, Any]:
    """Send from the outside process; return the message's kwargs as the broker holds them."""
    subprocess.run(  # nosec B603 - fixed argument list
        [sys.executable, "-c", SENDER, rt.settings.broker_url, json.dumps(kwargs), key],
        check=True,
        timeout=60,
        cwd="/",  # nothing of ours importable by accident
    )
    raw = redis.Redis.from_url(rt.settings.broker_url).rpop("submit")
    assert isinstance(raw, bytes)
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert check_body("nbq.generate", body) is None  # the guard lets it through
    return dict(body[1])


def run_generate(rt: Runtime, kwargs: dict[str, Any]) -> JobRecord | None:
    """What ``nbq.generate`` does with the message first: the worker's intake."""
    return intake(
        rt,
        request=kwargs["request"],
        job_id=kwargs.get("job_id"),
        producer=kwargs.get("producer"),
        batch_id=kwargs.get("batch_id"),
        raw=True,
        producer_proof=kwargs.get("producer_proof"),
    )


ATTACK = {"request": {"prompt": "the attacker's prompt"}, "job_id": "order-7", "producer": "bob"}


@pytest.mark.parametrize(
    "key",
    ["", "0" * 64, producer_key(MASTER, "alice")],
    ids=["no_proof", "garbage_key", "another_producers_key"],
)
def test_a_raw_sender_without_bobs_proof_cannot_create_a_job_under_bobs_ids(
    rt: Runtime, key: str
) -> None:
    # When an outside broker client sends nbq.generate naming bob, without bob's proof
    assert run_generate(rt, send_raw(rt, ATTACK, key)) is None

    # Then nothing is recorded under bob's id, and bob's own request is his own job
    assert rt.store.get("bob~order-7") is None
    producer = Producer(rt.settings, celery_app=create_celery_app(rt.settings), runtime=rt)
    handle = producer.enqueue({"prompt": "bob's own prompt"}, job_id="order-7", producer="bob")
    record = rt.store.require(handle.job_id)
    assert handle.job_id == "bob~order-7"
    assert record.request["prompt"] == "bob's own prompt" and record.producer == "bob"


def test_a_service_holding_bobs_key_may_send_for_bob(rt: Runtime) -> None:
    kwargs = {**ATTACK, "job_id": "order-8", "request": {"prompt": "sent for bob"}}
    record = run_generate(rt, send_raw(rt, kwargs, producer_key(MASTER, "bob")))
    assert record is not None and record.job_id == "bob~order-8" and record.producer == "bob"


def test_bobs_proof_for_one_id_does_not_prove_another(rt: Runtime) -> None:
    key = producer_key(MASTER, "bob")
    proof = hmac.new(key.encode(), b"nbq.generate:bob~order-9", hashlib.sha256).hexdigest()
    kwargs = {**ATTACK, "job_id": "bob~order-10", "producer_proof": proof}
    assert run_generate(rt, kwargs) is None


def test_a_raw_message_without_a_producer_stays_in_the_unnamed_scope(rt: Runtime) -> None:
    kwargs = {"request": {"prompt": "anonymous"}, "job_id": "order-7"}
    record = run_generate(rt, send_raw(rt, kwargs))
    assert record is not None and record.job_id == "order-7" and record.producer is None


def test_the_producers_own_message_carries_its_proof_when_it_races_its_record(
    rt: Runtime,
) -> None:
    # A worker that reads the Producer's message before its record (a broken pipeline)
    # records the job from the message: the proof lets it.
    record = JobRecord(job_id="bob~order-11", request={"prompt": "raced"}, producer="bob")
    step = generate_step(record, rt.settings)
    assert step.producer_proof
    made = run_generate(
        rt,
        {
            "request": step.request,
            "job_id": step.job_id,
            "producer": step.producer,
            "producer_proof": step.producer_proof,
        },
    )
    assert made is not None and made.producer == "bob" and made.request["prompt"] == "raced"


def test_without_a_producer_secret_no_raw_message_can_name_a_producer(
    make_rt: Callable[..., Runtime],
) -> None:
    bare = make_rt()
    assert run_generate(bare, {**ATTACK, "producer_proof": "x" * 64}) is None
    assert bare.store.get("bob~order-7") is None
