"""Hostile broker messages cannot kill or stall a worker (issue 13).

The sending side is a plain kombu producer: no project import, exactly what another
service (or an attacker with broker access) can do. The receiving side is one real
``nbq worker`` process on a real redis-server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from kombu.connection import Connection
from kombu.messaging import Producer as KombuProducer

from nanobanana_queue.workers.jobs.state import JobState
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

FAR_FUTURE = "2999-01-01T00:00:00+00:00"
PAST = "2001-01-01T00:00:00+00:00"
GOOD_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass
class Hostile:
    name: str
    reason: str
    body: str | bytes
    task: str | None = "nbq.submit"
    queue: str = "submit"
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"
    drop_headers: bool = False


def _body(args: list[Any], kwargs: dict[str, Any], embed: dict[str, Any] | None = None) -> str:
    return json.dumps([args, kwargs, GOOD_EMBED if embed is None else embed])


SUBMIT_OK = _body([], {"job_id": "hostile-target"})

HOSTILE: list[Hostile] = [
    Hostile("a JSON string", "body_shape", '"just a string"'),
    Hostile("an empty object", "body_shape", "{}"),
    Hostile("null", "body_shape", "null"),
    Hostile("a number", "body_shape", "123"),
    Hostile("a one-element list", "body_shape", "[1]"),
    Hostile("a two-element list", "body_shape", "[[],{}]"),
    Hostile("a four-element list", "body_shape", "[[],{},{},{}]"),
    Hostile("kwargs a list", "body_shape", "[[],[],{}]"),
    Hostile("a callback embedded", "body_shape", _body([], {"job_id": "x"}, {"callbacks": [{}]})),
    Hostile("timelimit a string", "bad_header", SUBMIT_OK, headers={"timelimit": "x"}),
    Hostile("timelimit one element", "bad_header", SUBMIT_OK, headers={"timelimit": [1]}),
    Hostile("timelimit a number", "bad_header", SUBMIT_OK, headers={"timelimit": 5}),
    Hostile("id a dict", "bad_header", SUBMIT_OK, headers={"id": {"a": 1}}),
    Hostile("eta not a date", "bad_header", SUBMIT_OK, headers={"eta": "soon"}),
    Hostile("expires a number", "bad_header", SUBMIT_OK, headers={"expires": 123}),
    Hostile("retries a string", "bad_header", SUBMIT_OK, headers={"retries": "3"}),
    Hostile("an unknown task", "unknown_task", SUBMIT_OK, task="evil.rm_rf"),
    Hostile("no task header", "not_a_task", SUBMIT_OK, drop_headers=True),
    Hostile("not JSON", "undecodable", "{not json"),
    Hostile("not UTF-8", "undecodable", b"\xff\xfe\x00garbage"),
    Hostile(
        "pickle content type",
        "content_type",
        SUBMIT_OK,
        content_type="application/x-python-serialize",
    ),
    Hostile(
        "an oversized body",
        "oversized",
        _body([], {"request": {"prompt": "x" * 600_000}}),
        task="nbq.generate",
    ),
    Hostile("a job id with a path", "invalid_kwargs", _body([], {"job_id": "../../etc"})),
    Hostile("a missing job id", "invalid_kwargs", _body([], {})),
    Hostile("an unexpected kwarg", "invalid_kwargs", _body([], {"job_id": "x", "rm": 1})),
    Hostile("too many args", "invalid_kwargs", _body(["a", "b", "c"], {})),
    Hostile(
        "a poll token that is an object",
        "invalid_kwargs",
        _body([], {"job_id": "x", "token": {"t": 1}}),
        task="nbq.poll",
        queue="poll",
    ),
    Hostile(
        "a request that is a string",
        "invalid_kwargs",
        _body([], {"request": "draw"}),
        task="nbq.generate",
    ),
    Hostile(
        "a far-future ETA",
        "eta_beyond_horizon",
        _body([], {"job_id": "x", "token": "t"}),
        task="nbq.poll",
        queue="poll",
        headers={"eta": FAR_FUTURE},
    ),
    Hostile("an expired message", "expired", SUBMIT_OK, headers={"expires": PAST}),
    Hostile(
        "a download with a 1 MB-ish id",
        "invalid_kwargs",
        _body([], {"job_id": "j" * 5000}),
        task="nbq.download",
        queue="download",
    ),
]


def _headers(case: Hostile, task_id: str) -> dict[str, Any] | None:
    if case.drop_headers:
        return None
    return {
        "lang": "py",
        "task": case.task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        **case.headers,
    }


def publish(broker_url: str, case: Hostile) -> str:
    task_id = uuid.uuid4().hex
    with Connection(broker_url) as conn:
        KombuProducer(conn.channel()).publish(
            case.body,
            routing_key=case.queue,
            exchange="",
            content_type=case.content_type,
            content_encoding="utf-8",
            headers=_headers(case, task_id),
        )
    return task_id


def dead_list(stack: Stack, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanobanana_queue.producers.cli.main",
            "dead",
            "list",
            "--json",
            *args,
        ],
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def _queues_empty(url: str) -> bool:
    client = redis.Redis.from_url(url)
    return all(client.llen(q) == 0 for q in ("submit", "poll", "download")) and (
        client.hlen("unacked") == 0
    )


def test_the_hostile_table_is_dead_lettered_and_real_jobs_behind_it_are_stored(
    stack: Stack,
) -> None:
    # Given a table of hostile messages waiting in front of five real jobs
    assert len(HOSTILE) >= 20
    for case in HOSTILE:
        publish(stack.redis.url, case)
    producer = stack.producer()
    jobs = [producer.enqueue({"prompt": f"real job {i}", "quality": "1K"}).job_id for i in range(5)]
    # When one real worker takes them all
    worker = stack.start_worker(concurrency=2)
    pid = worker.pid
    records = stack.wait_all(producer, jobs, timeout_s=180)
    # Then the five jobs are stored by the same worker process (it never restarted)
    assert {r.state for r in records.values()} == {JobState.STORED}
    assert worker.poll() is None and worker.pid == pid
    assert "Unrecoverable error" not in stack.worker_logs()
    # And every hostile message is in the dead-letter store with its reason
    wait_until(lambda: len(dead_list(stack)) >= len(HOSTILE), timeout_s=60, what="dead letters")
    letters = dead_list(stack, "--limit", "1000")
    assert Counter(letter["reason"] for letter in letters) == Counter(c.reason for c in HOSTILE)
    assert all(letter["hostname"] == "w1@test" for letter in letters)
    assert {letter["queue"] for letter in letters} == {"submit", "poll", "download"}
    # And nothing else is left in the queues
    wait_until(lambda: _queues_empty(stack.redis.url), timeout_s=60, what="empty queues")
    # And no job was created by any hostile message
    assert stack.emulator.stats()["creates_accepted"] == 5


def test_a_far_future_eta_flood_is_refused_at_receipt_and_fresh_jobs_still_run(
    stack: Stack,
) -> None:
    # Given a worker, and 2,100 far-future polls sent by a plain client (more than the
    # worker's worker_eta_task_limit of 2,000 it would otherwise hold and stop at)
    worker = stack.start_worker(concurrency=2)
    flood = Hostile(
        "eta flood",
        "eta_beyond_horizon",
        _body([], {"job_id": "flood", "token": "t"}),
        task="nbq.poll",
        queue="poll",
        headers={"eta": FAR_FUTURE},
    )
    with Connection(stack.redis.url) as conn:
        channel = conn.channel()
        sender = KombuProducer(channel)
        for _ in range(2100):
            task_id = uuid.uuid4().hex
            sender.publish(
                flood.body,
                routing_key="poll",
                exchange="",
                content_type="application/json",
                content_encoding="utf-8",
                headers=_headers(flood, task_id),
            )
    # When ten real jobs follow
    producer = stack.producer()
    jobs = [
        producer.enqueue({"prompt": f"after flood {i}", "quality": "1K"}).job_id for i in range(10)
    ]
    # Then they are stored (a generous wait, not a speed claim)
    records = stack.wait_all(producer, jobs, timeout_s=240)
    assert {r.state for r in records.values()} == {JobState.STORED}
    assert worker.poll() is None
    # And the flood is dead-lettered, not held: nothing unacked is left in the broker
    wait_until(lambda: _queues_empty(stack.redis.url), timeout_s=120, what="flood drained")
    letters = dead_list(stack, "--reason", "eta_beyond_horizon", "--limit", "5000")
    assert len(letters) == 2100
