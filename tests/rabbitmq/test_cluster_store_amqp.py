"""RabbitMQ broker + the job store on a Redis Cluster: the production pairing for a
sharded store (kombu has no cluster transport), end to end with jobs on every shard."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.jobs.state import ACTIVE_STATES
from tests.faults.helpers import (
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
)
from tests.support.rabbitmq import Vhost
from tests.support.redis_cluster import RedisCluster
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

JOBS = 12


def test_jobs_run_end_to_end_on_rabbitmq_with_the_store_on_a_cluster(
    stack: Stack, vhost: Vhost, redis_cluster: RedisCluster
) -> None:
    # Given RabbitMQ as broker and a 3-master cluster as job store
    stack.overrides["NBQ_BROKER_URL"] = vhost.url
    stack.overrides["NBQ_REDIS_URL"] = redis_cluster.url
    try:
        stack.start_worker(concurrency=4)
        producer = stack.producer()
        store = producer.runtime.store
        assert store.shards > 1
        # When jobs are enqueued
        job_ids = enqueue(producer, JOBS, prompt="amqp on a cluster store")
        records = stack.wait_all(producer, job_ids, timeout_s=120)
    finally:
        stack.stop_workers()  # before the vhost goes
    # Then each is stored once, with one paid create, its records on several masters
    assert_nothing_lost(records)
    assert_one_create_each(stack, records)
    assert_images_intact(stack, records)
    assert len({redis_cluster.master_of(store.key(j)) for j in job_ids}) > 1
    assert all(store.count_in_state(s) == 0 for s in ACTIVE_STATES)
