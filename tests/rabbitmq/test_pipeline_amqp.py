"""The pipeline end to end on RabbitMQ: quorum queues, countdowns held by the broker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kombu.transport.native_delayed_delivery import level_name

from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.broker_queues import amqp_queue_lengths
from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
)
from tests.support.procs import wait_until
from tests.support.rabbitmq import Vhost
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

JOBS = 12


def held_for_a_countdown(replies: dict[str, list[dict[str, Any]]], *, after: datetime) -> list[Any]:
    """Scheduled (ETA) entries still waiting for their time after ``after``.

    Celery passes every message carrying an ETA through its timer on arrival, even one
    already due (native delayed delivery hands it over at its time): such an entry may
    show for a moment, with an ETA in the past. A countdown held by the worker has one
    in the future.
    """
    return [
        entry
        for entries in replies.values()
        for entry in entries
        if _aware(datetime.fromisoformat(str(entry["eta"]))) > after
    ]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_jobs_run_end_to_end_on_quorum_queues_with_countdowns_waiting_in_the_broker(
    amqp_stack: Stack, vhost: Vhost
) -> None:
    stack = amqp_stack
    # Given a worker on RabbitMQ (the job store stays on Redis), and polls 4 s apart so
    # that every job spends seconds between polls with its countdown message in flight
    stack.overrides.update({"NBQ_POLL_MIN_INTERVAL_S": "4", "NBQ_POLL_MAX_INTERVAL_S": "5"})
    stack.start_worker(concurrency=4)
    producer = stack.producer()
    app = create_app(stack.settings())
    # When jobs are enqueued and their polls are scheduled with countdowns
    job_ids = enqueue(producer, JOBS, prompt="amqp e2e")
    samples: list[list[object]] = []
    delayed_seen: list[int] = []

    def sampled_while_generating() -> bool:
        if not any(producer.status(j).state is JobState.GENERATING for j in job_ids):
            return False
        replies = app.control.inspect(timeout=1.0).scheduled() or {}
        samples.append(held_for_a_countdown(replies, after=datetime.now(UTC)))
        delayed = amqp_queue_lengths(vhost.url, [level_name(n) for n in range(28)])
        delayed_seen.append(sum(delayed.values()))
        return len(samples) >= 2 and any(delayed_seen)

    wait_until(sampled_while_generating, timeout_s=60, interval_s=0.2, what="generating jobs")
    records = stack.wait_all(producer, job_ids)
    # Then every job is stored once, with one paid create each
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)
    assert all(r.polls >= 1 for r in records.values())
    # And while jobs generated, the worker held no ETA message: the countdowns waited in
    # the broker's celery_delayed_* queues
    assert samples and all(sample == [] for sample in samples), samples
    assert max(delayed_seen) >= 1
    # And our queues, and the delayed-delivery ladder, are quorum queues
    types = vhost.queue_types()
    assert {q: types.get(q) for q in ("submit", "poll", "download")} == dict.fromkeys(
        ("submit", "poll", "download"), "quorum"
    ), types
    ladder = {q: t for q, t in types.items() if q.startswith("celery_delayed_")}
    assert len(ladder) == 28 and set(ladder.values()) == {"quorum"}, ladder


def test_on_the_redis_broker_the_same_sampling_finds_the_countdowns_held_by_the_worker(
    stack: Stack,
) -> None:
    # The contrast that shows the check above can fail: Redis countdowns wait in the worker
    stack.overrides.update({"NBQ_POLL_MIN_INTERVAL_S": "4", "NBQ_POLL_MAX_INTERVAL_S": "5"})
    stack.start_worker(concurrency=4)
    producer = stack.producer()
    app = create_app(stack.settings())
    job_ids = enqueue(producer, 4, prompt="redis held")
    held: list[list[object]] = []

    def found_held() -> bool:
        if not any(producer.status(j).state is JobState.GENERATING for j in job_ids):
            return False
        replies = app.control.inspect(timeout=1.0).scheduled() or {}
        held.append(held_for_a_countdown(replies, after=datetime.now(UTC)))
        return bool(held[-1])

    wait_until(found_held, timeout_s=60, interval_s=0.2, what="a countdown held by the worker")
    assert_nothing_lost(stack.wait_all(producer, job_ids))
