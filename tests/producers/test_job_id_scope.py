"""Job ids are scoped per producer (issue 13): one producer never receives another's job,
through the Python API, ``send_task`` (intake), the CLI or the ingress (tests/producers/
ingress/test_jobs.py), and the answer never tells that the other's id exists."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.errors import InvalidRequestError
from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.guard.inspect import Limits, check_body
from nanobanana_queue.workers.jobs.ids import InvalidJobIdError, caller_job_id, scoped_job_id
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages.intake import intake
from tests.support.redis_server import RedisServer


def _producer(settings: Settings) -> Producer:
    return Producer(
        settings, celery_app=create_app(settings), runtime=Runtime.from_settings(settings)
    )


@pytest.fixture
def producer(redis_server: RedisServer) -> Producer:
    return _producer(Settings(broker_url=redis_server.url, evolink_api_key="k"))


def test_the_same_id_from_two_producers_is_two_jobs_each_with_its_own_request(
    producer: Producer,
) -> None:
    alice = producer.enqueue({"prompt": "alice's secret"}, job_id="order-1", producer="alice")
    bob = producer.enqueue({"prompt": "bob's"}, job_id="order-1", producer="bob")
    assert (alice.job_id, bob.job_id) == ("alice~order-1", "bob~order-1")
    assert bob.status().request["prompt"] == "bob's"
    assert bob.status().producer == "bob"
    # And the unnamed namespace is a third one, stored as given
    plain = producer.enqueue({"prompt": "mine"}, job_id="order-1")
    assert plain.job_id == "order-1" and plain.status().request["prompt"] == "mine"


def test_repeating_an_id_within_a_producer_is_idempotent(producer: Producer) -> None:
    first = producer.enqueue({"prompt": "p"}, job_id="again", producer="alice")
    second = producer.enqueue({"prompt": "p"}, job_id="again", producer="alice")
    again = producer.enqueue({"prompt": "p"}, job_id="alice~again", producer="alice")
    assert first.job_id == second.job_id == again.job_id == "alice~again"


@pytest.mark.parametrize(
    ("producer_name", "job_id"), [("bob", "alice~order-1"), (None, "alice~order-1")]
)
def test_an_id_in_another_producers_scope_is_refused_like_any_invalid_id(
    producer: Producer, producer_name: str | None, job_id: str
) -> None:
    producer.enqueue({"prompt": "alice's"}, job_id="order-1", producer="alice")
    with pytest.raises(InvalidRequestError) as refused:
        producer.enqueue({"prompt": "x"}, job_id=job_id, producer=producer_name)
    with pytest.raises(InvalidRequestError) as unused:  # a scope nobody has used
        producer.enqueue({"prompt": "x"}, job_id="zed~order-1", producer=producer_name)
    assert refused.value.field == unused.value.field == "job_id"
    assert str(refused.value).replace("alice", "zed") == str(unused.value)


def test_send_task_intake_scopes_by_the_messages_producer(redis_server: RedisServer) -> None:
    rt = Runtime.from_settings(Settings(broker_url=redis_server.url))
    alice = intake(rt, request={"prompt": "alice's"}, job_id="x-1", producer="alice")
    bob = intake(rt, request={"prompt": "bob's"}, job_id="x-1", producer="bob")
    assert alice is not None and bob is not None
    assert (alice.job_id, bob.job_id) == ("alice~x-1", "bob~x-1")
    assert bob.request["prompt"] == "bob's"
    assert intake(rt, request={"prompt": "x"}, job_id="alice~x-1", producer="bob") is None
    # A fresh id of a named producer is in its scope too
    fresh = intake(rt, request={"prompt": "f"}, job_id=None, producer="carol")
    assert fresh is not None and fresh.job_id.startswith("carol~")


def test_the_guard_accepts_our_scoped_messages_and_refuses_a_foreign_scope() -> None:
    ok = [[], {"request": {"prompt": "p"}, "job_id": "alice~o", "producer": "alice"}, {}]
    assert check_body("nbq.generate", ok) is None
    assert check_body("nbq.submit", [[], {"job_id": "alice~o"}, {}]) is None
    bad = [[], {"request": {"prompt": "p"}, "job_id": "alice~o", "producer": "bob"}, {}]
    refusal = check_body("nbq.generate", bad)
    assert refusal is not None and refusal.reason == "invalid_kwargs"
    assert isinstance(Limits, type)  # the module's limits type is importable for callers


def test_scoping_is_idempotent_and_reversible() -> None:
    assert scoped_job_id("a", scoped_job_id("a", "j")) == "a~j"
    assert caller_job_id("a~j") == caller_job_id("j") == "j"
    with pytest.raises(InvalidJobIdError):
        scoped_job_id("a b", "j")


@pytest.mark.integration  # runs nbq as a process
def test_the_cli_submit_scopes_by_producer(redis_server: RedisServer) -> None:
    env = {**os.environ, "NBQ_BROKER_URL": redis_server.url, "NBQ_EVOLINK_API_KEY": "k"}

    def submit(*extra: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "nanobanana_queue.producers.cli.main",
                "submit",
                "a cat",
                "--job-id",
                "c-1",
                *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    assert "alice~c-1" in submit("--producer", "alice")
    assert "bob~c-1" in submit("--producer", "bob")
