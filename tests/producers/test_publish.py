"""Enqueue writes the job record and the ``nbq.generate`` message together (one pipeline:
its cost per job is benchmarks/redis_commands.py's to report)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

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


def test_an_enqueue_after_a_script_flush_records_indexes_and_sends_the_job(
    redis_server: RedisServer,
) -> None:
    # Given a Redis that lost its script cache (a restart, a failover, SCRIPT FLUSH)
    producer = _producer(Settings(broker_url=redis_server.url, evolink_api_key="k"))
    producer.enqueue(REQUEST)  # the scripts have run once in this process
    redis_server.client().script_flush()

    # When a job is enqueued (its record, indexes and message in kombu's publish pipeline,
    # which this process does not execute and so could not recover from NOSCRIPT)
    handle = producer.enqueue(REQUEST, producer="billing", batch_id="b-1")

    # Then the record is written, as queued, with what the caller gave
    record = producer.status(handle.job_id)
    assert record.state is JobState.QUEUED
    assert (record.producer, record.batch_id) == ("billing", "b-1")
    assert record.request["prompt"] == REQUEST["prompt"]
    # And indexed for its producer (GET /v1/jobs) and waiting on its fair-share list
    client = redis_server.client()
    store = producer.runtime.store
    assert client.zscore(store.producer_index_key("billing"), handle.job_id) is not None
    waiting = {s.producer: sum(s.waiting.values()) for s in producer.runtime.fair().snapshot()}
    assert waiting.get("billing") == 1
    # And its one message carries it
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
