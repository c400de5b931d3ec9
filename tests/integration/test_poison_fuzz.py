"""Hypothesis-generated raw messages against one real worker (issue 13).

The sending side is plain kombu. Each example puts a batch of generated messages (odd
bodies, odd headers, any of our task names, any content type) in front of one real job
on the same long-lived worker: the job is stored, the worker is the same process, every
message the guard's check refuses is in the dead-letter store and the queues drain.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.connection import Connection
from kombu.messaging import Producer as KombuProducer

from nanobanana_queue.workers.deadletters import DeadLetterStore
from nanobanana_queue.workers.guard.inspect import Limits, inspect_message
from nanobanana_queue.workers.jobs.state import JobState
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

QUEUES = {"nbq.submit": "submit", "nbq.poll": "poll", "nbq.download": "download"}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
ODD_VALUES = st.sampled_from(
    [None, "x", 5, [1], [None, None], [1, "x"], {"a": 1}, "2999-01-01T00:00:00", "", -1, True]
)
HEADER_KEYS = st.sampled_from(
    ["id", "eta", "expires", "retries", "timelimit", "root_id", "group", "ignore_result", "stamps"]
)
ARGS = st.sampled_from(
    [
        {"job_id": "fuzz-target"},
        {"job_id": "fuzz-target", "token": "t"},
        {"job_id": "../x"},
        {"job_id": 7},
        {},
    ]
)
BODIES = st.one_of(
    JSON.map(json.dumps),
    st.binary(max_size=48),
    st.builds(lambda a, k, e: json.dumps([a, k, e]), JSON, ARGS, JSON),
    st.builds(lambda k: json.dumps([[], k, {}]), ARGS),
)
MESSAGE = st.fixed_dictionaries(
    {
        "task": st.sampled_from([*QUEUES, "nbq.nope"]),
        "body": BODIES,
        "overrides": st.dictionaries(HEADER_KEYS, st.one_of(ODD_VALUES, JSON), max_size=3),
        "content_type": st.sampled_from(["application/json"] * 3 + ["text/plain"]),
    }
)


def _headers(task: str, overrides: dict[str, Any]) -> dict[str, Any]:
    task_id = uuid.uuid4().hex
    base = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}
    return {**base, "eta": None, "expires": None, "timelimit": [None, None], **overrides}


def _queues_empty(url: str) -> bool:
    client = redis.Redis.from_url(url)
    return all(client.llen(q) == 0 for q in QUEUES.values()) and client.hlen("unacked") == 0


def test_generated_messages_never_stop_a_real_worker(stack: Stack) -> None:
    worker = stack.start_worker(concurrency=2)
    pid = worker.pid
    producer = stack.producer()
    store = DeadLetterStore.from_settings(stack.settings())
    limits = Limits(
        max_message_bytes=stack.settings().max_message_bytes,
        max_countdown_s=stack.settings().max_countdown_s,
    )
    refused_so_far = 0

    @settings(
        max_examples=4,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(messages=st.lists(MESSAGE, min_size=15, max_size=15))
    def one_round(messages: list[dict[str, Any]]) -> None:
        nonlocal refused_so_far
        # Given generated messages published raw in front of one real job
        with Connection(stack.redis.url) as conn:
            sender = KombuProducer(conn.channel())
            for m in messages:
                headers = _headers(m["task"], m["overrides"])
                if inspect_message(
                    headers=headers,
                    body=m["body"],
                    content_type=m["content_type"],
                    content_encoding="utf-8",
                    now=time.time(),
                    limits=limits,
                ):
                    refused_so_far += 1
                sender.publish(
                    m["body"],
                    routing_key=QUEUES.get(m["task"], "submit"),
                    exchange="",
                    content_type=m["content_type"],
                    content_encoding="utf-8",
                    headers=headers,
                )
        job = producer.enqueue({"prompt": "behind the fuzz", "quality": "1K"}).job_id
        # Then the job is stored by the same worker process
        record = stack.wait_all(producer, [job], timeout_s=120)[job]
        assert record.state == JobState.STORED
        assert worker.poll() is None and worker.pid == pid
        # And every refused message is a dead letter, and the queues drain
        wait_until(lambda: store.count() >= refused_so_far, timeout_s=60, what="dead letters")
        wait_until(lambda: _queues_empty(stack.redis.url), timeout_s=60, what="empty queues")

    one_round()
    assert "Unrecoverable error" not in stack.worker_logs()
    assert refused_so_far > 0
