"""The key fault scenarios of tests/faults/ on RabbitMQ: 0 lost, 0 paid twice.

Each test runs in a vhost of its own on the machine's node, except the broker restart,
which stops a node: that test starts a node of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nanobanana_queue.producers.errors import EnqueueUncertainError
from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    SHORT_SUBMIT_LIMIT,
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
    kill_hard,
    wait_for_hits,
)
from tests.rabbitmq.conftest import on_amqp
from tests.support.procs import wait_until
from tests.support.rabbitmq import RabbitNode, Vhost
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

JOBS = 3
BREAKER_KEY = "nbq:breaker:quota"


@pytest.mark.parametrize("endpoint", ["create", "query", "file"])
def test_a_worker_killed_mid_stage_on_rabbitmq_leaves_nothing_lost_and_nothing_paid_twice(
    amqp_stack: Stack, endpoint: str
) -> None:
    stack = amqp_stack
    stack.overrides["NBQ_DOWNLOAD_TIMEOUT_S"] = "4"
    if endpoint == "create":
        # As on Redis (tests/faults/test_worker_crash.py): a create cut off mid-call is
        # resent only under trusted idempotency (an opt-in); the default never resends it
        # (tests/faults/test_unknown_outcomes.py).
        stack.overrides["NBQ_IDEMPOTENT_CREATES"] = "true"
        stack.emulator.set_idempotency(True)
        # The dead worker's claim is re-driven after the submit time limit: 12 s here
        stack.overrides.update(SHORT_SUBMIT_LIMIT)
    # Given every call to the endpoint hangs 4 s at first, so the worker is caught inside it
    rule = stack.emulator.add_fault(
        endpoint=endpoint, action="delay", seconds=4.0, count=JOBS, match="crash"
    )
    victim = stack.start_worker(name="victim")
    producer = stack.producer()
    job_ids = enqueue(producer, JOBS, prompt="crash")
    # When the worker is SIGKILLed while the first call hangs, and a new worker starts
    wait_for_hits(stack, rule)
    kill_hard(victim)
    stack.start_worker(name="rescuer")
    records = stack.wait_all(producer, job_ids)
    # Then every job is stored, with one paid create each and intact images (RabbitMQ
    # redelivers the dead worker's unacked late-ack messages at once; the early-acked
    # submit is recovered by the reconciler)
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)


def test_a_402_storm_on_rabbitmq_waits_in_the_broker_and_completes_after_top_up(
    amqp_stack: Stack,
) -> None:
    stack = amqp_stack
    # Given no credits left
    stack.emulator.set_credits(0)
    stack.start_worker()
    producer = stack.producer()
    job_ids = enqueue(producer, 4, prompt="broke")
    redis = stack.redis.client()
    # When the workers meet 402s (several probes)
    wait_until(
        lambda: stack.emulator.stats()["creates_rejected"].get("402", 0) >= 3,
        timeout_s=60,
        what="repeated 402 probes",
    )
    # Then the breaker is open and the jobs wait, never failed
    assert redis.hget(BREAKER_KEY, "state") == b"open"
    assert {producer.status(j).state for j in job_ids} <= {JobState.QUEUED, JobState.SUBMITTING}
    # When credits are restored, all complete once each
    stack.emulator.set_credits(None)
    records = stack.wait_all(producer, job_ids)
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert redis.hget(BREAKER_KEY, "state") == b"closed"


def test_a_broker_restart_with_jobs_in_flight_loses_none_and_an_enqueue_while_down_is_resent(
    stack: Stack, own_nodes: Callable[[], RabbitNode]
) -> None:
    # Given a RabbitMQ node of our own (free to stop) and a worker on it
    node = own_nodes()
    vhost = Vhost(port=node.port, node=node.name).create()
    on_amqp(stack, vhost)
    # and polls 2 s apart, so countdown messages wait in celery_delayed_* over the restart
    stack.overrides.update({"NBQ_POLL_MIN_INTERVAL_S": "2", "NBQ_POLL_MAX_INTERVAL_S": "3"})
    rule = stack.emulator.add_fault(
        endpoint="file", action="delay", seconds=2.0, count=2, match="restart"
    )
    stack.start_worker(concurrency=6)
    producer = stack.producer()
    job_ids = enqueue(producer, 8, prompt="restart")
    wait_for_hits(stack, rule)
    try:
        # When the broker stops with jobs in every stage
        node.stop_app()
        # Then an enqueue fails clearly, naming the job, with the job already recorded
        with pytest.raises(EnqueueUncertainError) as caught:
            producer.enqueue({"prompt": "restart while down", "quality": "1K"})
        down_job = caught.value.job_id
        assert down_job in str(caught.value)
        assert producer.status(down_job).state is JobState.QUEUED
    finally:
        # And when the broker comes back
        node.start_app()
    records = stack.wait_all(producer, [*job_ids, down_job], timeout_s=180)
    # Every job is stored, paid once, and the job enqueued while the broker was down was
    # sent by the reconciler (its message never went out)
    assert_nothing_lost(records)
    assert_one_create_each(stack, [*job_ids, down_job])
    assert_images_intact(stack, records)
    assert "requeued=" in stack.worker_logs()
    stack.stop_workers()
