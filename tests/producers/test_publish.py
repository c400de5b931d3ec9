"""Enqueue writes the job record and the ``nbq.generate`` message in one Redis round trip."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.errors import EnqueueUncertainError
from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages.intake import intake
from tests.support.redis_server import RedisServer

REQUEST = {"prompt": "a lighthouse at dawn", "size": "16:9", "quality": "2K"}


def _producer(settings: Settings) -> Producer:
    return Producer(
        settings, celery_app=create_app(settings), runtime=Runtime.from_settings(settings)
    )


def _generate_messages(server: RedisServer) -> list[dict[str, Any]]:
    """The kwargs of every ``nbq.generate`` waiting in the submit queue."""
    out = []
    for raw in server.client().lrange("submit", 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "nbq.generate"
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        out.append(kwargs)
    return out


def _calls(server: RedisServer, command: str) -> int:
    stats = server.client().info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def test_record_message_and_sent_event_share_one_pipeline(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = _producer(Settings(broker_url=redis_server.url, evolink_api_key="k"))
    producer.enqueue(REQUEST)  # warm-up: kombu declares the queue once
    redis_server.client().config_resetstat()
    executed: list[list[str]] = []
    real_execute = redis.client.Pipeline.execute

    def spy(pipe: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        executed.append([str(args[0]).upper() for args, _ in pipe.command_stack])
        return real_execute(pipe, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", spy)

    handle = producer.enqueue(REQUEST, producer="billing", batch_id="b-1")

    # One pipeline, one round trip (the producer's GET /v1/jobs index and the fair-share
    # gate's note ride along; one create in PRODUCER_INDEX_TRIM_EVERY also trims the index)
    store = producer.runtime.store
    index = [c[0] for c in store.producer_index_commands(producer.status(handle.job_id))]
    assert executed == [["LPUSH", "PUBLISH", "EVAL", *index, "EVAL"]]

    # The scripts travel as EVAL inside kombu's publish pipeline (never EVALSHA, which a
    # pipeline we do not execute could not recover from after a Redis restart).
    assert (_calls(redis_server, "eval"), _calls(redis_server, "evalsha")) == (2, 0)
    assert (_calls(redis_server, "lpush"), _calls(redis_server, "publish")) == (1, 1)
    record = producer.status(handle.job_id)
    assert record.state is JobState.QUEUED
    assert (record.producer, record.batch_id) == ("billing", "b-1")
    assert record.request["prompt"] == REQUEST["prompt"]
    sent = [m for m in _generate_messages(redis_server) if m["job_id"] == handle.job_id]
    expected = {"request": record.request, "job_id": handle.job_id, "producer": "billing"}
    assert sent == [{**expected, "batch_id": "b-1"}]


def test_the_message_carries_everything_a_worker_needs_to_record_the_same_job(
    redis_server: RedisServer,
) -> None:
    settings = Settings(broker_url=redis_server.url, evolink_api_key="k")
    producer = _producer(settings)
    handle = producer.enqueue(REQUEST, producer="billing", batch_id="b-2")
    written = producer.status(handle.job_id)
    (kwargs,) = [m for m in _generate_messages(redis_server) if m["job_id"] == handle.job_id]

    # If a worker ever ran nbq.generate before the record was written, its intake would
    # record the same job from the message alone.
    redis_server.client().delete(producer.runtime.store.key(handle.job_id))
    from_message = intake(Runtime.from_settings(settings), **kwargs)

    assert from_message is not None
    keep = {"job_id", "state", "request", "producer", "batch_id"}
    assert from_message.model_dump(include=keep) == written.model_dump(include=keep)


def test_a_separate_job_store_gets_the_record_before_the_message(
    redis_server: RedisServer, session_redis: RedisServer
) -> None:
    settings = Settings(
        broker_url=redis_server.url, redis_url=session_redis.url, evolink_api_key="k"
    )
    producer = _producer(settings)

    handle = producer.enqueue(REQUEST, batch_id="b-3")

    assert producer.runtime.store.get(handle.job_id) is not None
    assert redis_server.client().exists(producer.runtime.store.key(handle.job_id)) == 0
    (kwargs,) = [m for m in _generate_messages(redis_server) if m["job_id"] == handle.job_id]
    assert kwargs["batch_id"] == "b-3"


def test_a_pipeline_broken_half_way_still_leaves_a_recorded_job(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The message goes out but the create inside the same pipeline fails: kombu reports
    # "delivery is uncertain". The producer makes sure of the record and sends again.
    producer = _producer(Settings(broker_url=redis_server.url, evolink_api_key="k"))
    real_args = producer.runtime.store.create_eval_args

    def broken(record: Any) -> Any:
        stamped, _ = real_args(record)
        return stamped, ["EVAL", "return redis.call('NO_SUCH_COMMAND')", 0]

    monkeypatch.setattr(producer.runtime.store, "create_eval_args", broken)

    handle = producer.enqueue(REQUEST, batch_id="b-4")

    record = producer.status(handle.job_id)
    assert record.state is JobState.QUEUED and record.batch_id == "b-4"
    sent = [m for m in _generate_messages(redis_server) if m["job_id"] == handle.job_id]
    assert len(sent) == 2  # the first and the re-send; submit's claim has one winner


def test_redis_gone_mid_enqueue_raises_with_the_job_id_to_retry_with(
    redis_process: RedisServer,
) -> None:
    settings = Settings(broker_url=redis_process.url, evolink_api_key="k")
    producer = _producer(settings)
    producer.celery.conf.broker_connection_retry = False
    producer.celery.conf.task_publish_retry = False
    redis_process.stop()

    with pytest.raises(EnqueueUncertainError) as caught:
        producer.enqueue(REQUEST)

    assert caught.value.job_id and f"job_id={caught.value.job_id!r}" in str(caught.value)
