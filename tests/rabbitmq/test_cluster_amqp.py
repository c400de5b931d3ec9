"""A 3-node RabbitMQ cluster of our own: quorum queues on 3 nodes, the leader's node
stopped mid-run, nothing lost and nothing paid twice."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
    wait_for_hits,
)
from tests.rabbitmq.conftest import on_amqp
from tests.support.procs import wait_until
from tests.support.rabbitmq import RabbitNode, Vhost, join_cluster, quorum_members
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.slow]

JOBS = 10


def test_the_poll_queue_leaders_node_stopped_mid_run_loses_no_job_on_a_3_node_cluster(
    stack: Stack, own_nodes: Callable[[], RabbitNode]
) -> None:
    # Given three nodes of our own joined into one cluster
    nodes = [own_nodes() for _ in range(3)]
    for node in nodes[1:]:
        join_cluster(node, nodes[0])
    vhost = Vhost(port=nodes[0].port, node=nodes[0].name).create()
    # and workers that know every node (kombu fails over along the list)
    on_amqp(stack, vhost)
    stack.overrides["NBQ_BROKER_URL"] = ";".join(
        f"amqp://guest:guest@127.0.0.1:{n.port}/{vhost.name}" for n in nodes
    )
    stack.overrides.update({"NBQ_POLL_MIN_INTERVAL_S": "2", "NBQ_POLL_MAX_INTERVAL_S": "3"})
    rule = stack.emulator.add_fault(
        # every download held 4 s: jobs are still in flight when the node stops, even on a
        # loaded machine (2 s on 3 downloads let all 10 end first under load)
        endpoint="file",
        action="delay",
        seconds=4.0,
        count=JOBS,
        match="cluster",
    )
    stack.start_worker(concurrency=6, name="a")
    stack.start_worker(concurrency=6, name="b")
    producer = stack.producer()
    job_ids = enqueue(producer, JOBS, prompt="cluster")
    # Then our queues are quorum queues replicated on all three nodes
    names = {n.name for n in nodes}
    for queue in ("submit", "poll", "download"):
        _, members = quorum_members(vhost, queue)
        assert set(members) == names, (queue, members)
    # When the node leading the poll queue stops while jobs are in every stage
    wait_for_hits(stack, rule)
    in_flight = {producer.status(j).state for j in job_ids} - {JobState.STORED}
    assert in_flight, "every job ended before the node stopped"
    leader, _ = quorum_members(vhost, "poll")
    victim = next(n for n in nodes if n.name == leader)
    stopped_at = time.monotonic()
    victim.stop_app()
    survivor = next(n for n in nodes if n is not victim)
    vhost.node = survivor.name
    # Then a new leader takes over on a surviving node
    wait_until(
        lambda: quorum_members(vhost, "poll")[0] not in ("", leader),
        timeout_s=60,
        interval_s=1,
        what="a new poll leader",
    )
    new_leader_s = time.monotonic() - stopped_at
    records = stack.wait_all(producer, job_ids, timeout_s=180)
    # (measured, shown with -s: the report's one run)
    print(
        f"\ncluster: stopped {leader} with {sorted(s.value for s in in_flight)} in flight; "
        f"new poll leader after {new_leader_s:.1f} s; all {JOBS} stored "
        f"{time.monotonic() - stopped_at:.1f} s after the stop"
    )
    # And every job is stored, with one paid create each
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)
    stack.stop_workers()
    victim.start_app()
