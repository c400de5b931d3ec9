"""A Sentinel failover mid-run: the master SIGKILLed with 30 jobs in flight while a
producer keeps enqueuing; the replica is promoted and everyone follows it, no restart.

Broker and job store both on ``sentinel://`` (kombu's Sentinel transport, redis-py's
Sentinel client), ``NBQ_STORE_WAIT_REPLICAS=1``: job creation and each create's task id
are acknowledged by the replica before the call returns, so the promoted replica holds
every job a producer was told about (0 lost), and the paid task ids (0 paid twice).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.errors import EnqueueUncertainError
from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    END_TIMEOUT_S,
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
    wait_for_state,
)
from tests.support.emulator_server import EmulatorServer
from tests.support.s3_server import S3Server
from tests.support.sentinel import SentinelGroup
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

IN_FLIGHT = 30


class _KeepEnqueuing(threading.Thread):
    """A producer that enqueues one job every ``pause_s`` until stopped."""

    def __init__(self, producer: Producer, pause_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.producer = producer
        self.pause_s = pause_s
        self.accepted: list[str] = []
        self.uncertain: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            n += 1
            try:
                job = self.producer.enqueue({"prompt": f"during failover {n}", "quality": "1K"})
                self.accepted.append(job.job_id)
            except EnqueueUncertainError as exc:  # refused loudly: the caller knows
                self.uncertain.append(exc.job_id)
            time.sleep(self.pause_s)


@pytest.fixture
def sentinel_stack(
    tmp_path: object,
    sentinel_group: SentinelGroup,
    session_s3: S3Server,
    session_emulator: EmulatorServer,
) -> Iterator[Stack]:
    """Workers on the Sentinel group's master; every worker a test started is stopped after
    it (a test that leaves one running would leak it past the session)."""
    session_emulator.reset()
    the_stack = Stack(
        redis=sentinel_group.master,
        s3=session_s3,
        emulator=session_emulator,
        dir=sentinel_group.dir,
        overrides={
            **sentinel_group.env(),
            "NBQ_STORE_WAIT_REPLICAS": "1",
            "NBQ_STORE_WAIT_TIMEOUT_MS": "200",
            "NBQ_DOWNLOAD_TIMEOUT_S": "4",
        },
    )
    yield the_stack
    the_stack.stop_workers()
    session_emulator.reset()


def test_a_sentinel_failover_with_jobs_in_flight_loses_none_and_pays_once(
    sentinel_stack: Stack, sentinel_group: SentinelGroup
) -> None:
    stack = sentinel_stack
    # Polls held a moment so that the 30 are still in flight when the master dies
    stack.emulator.add_fault(endpoint="query", action="delay", seconds=1.0, count=IN_FLIGHT)
    worker = stack.start_worker(concurrency=8)
    try:
        producer = stack.producer()
        first = enqueue(producer, IN_FLIGHT, prompt="before failover")
        wait_for_state(producer, first, JobState.GENERATING)
        more = _KeepEnqueuing(stack.producer())
        more.start()
        time.sleep(0.5)

        # When the master is SIGKILLed and the sentinels promote the replica
        sentinel_group.kill_master()
        killed_at = time.monotonic()
        sentinel_group.wait_failover()
        failover_s = time.monotonic() - killed_at
        time.sleep(2.0)  # the producer goes on enqueuing on the new master
        more.stopped.set()
        more.join(timeout=60)

        # Then every job a producer was told about ends stored; none paid twice
        recorded_anyway = [j for j in more.uncertain if producer.runtime.store.get(j)]
        job_ids = first + more.accepted + recorded_anyway
        records = stack.wait_all(producer, job_ids, timeout_s=END_TIMEOUT_S)
        assert worker.poll() is None, "the worker followed the failover without a restart"
        lost = [j for j in job_ids if j not in records]
        print(
            f"failover {failover_s:.1f}s; jobs {len(job_ids)} "
            f"(during failover {len(more.accepted)}, refused {len(more.uncertain)}); lost {lost}"
        )
        assert lost == []
        assert_nothing_lost(records)
        assert_one_create_each(stack, job_ids)
        assert_images_intact(stack, records)
        assert more.accepted, "the producer enqueued across the failover"
    finally:
        stack.stop_workers()
