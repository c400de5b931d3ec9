"""The whole pipeline with the job store on a 3-master Redis Cluster (the broker is a
separate Redis: kombu has no cluster transport). Jobs land on every shard; the worker's
reconciler finds, across the shards, a recorded job whose message never went out."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import assert_images_intact, assert_nothing_lost, assert_one_create_each
from tests.support.procs import wait_until
from tests.support.redis_cluster import RedisCluster
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

JOBS = 16


def test_the_pipeline_runs_end_to_end_with_the_store_on_a_cluster(
    stack: Stack, redis_cluster: RedisCluster
) -> None:
    stack.overrides["NBQ_REDIS_URL"] = redis_cluster.url
    stack.start_worker(concurrency=8)
    producer = stack.producer()
    store = producer.runtime.store
    assert store.shards > 1
    job_ids = [
        producer.enqueue({"prompt": f"cluster {i}", "quality": "1K"}).job_id for i in range(JOBS)
    ]
    # And one job recorded but never sent (a producer that died after its write)
    orphan, created = store.create(JobRecord(job_id="cluster-orphan", request=_request()))
    assert created
    records = stack.wait_all(producer, [*job_ids, orphan.job_id], timeout_s=120)
    assert_nothing_lost(records)
    assert_one_create_each(stack, records)
    assert_images_intact(stack, records)
    # Records live on more than one cluster master, and the indexes are empty again
    masters = {redis_cluster.master_of(store.key(j)) for j in job_ids}
    assert len(masters) > 1
    assert all(store.count_in_state(s) == 0 for s in (JobState.QUEUED, JobState.GENERATING))


def _request() -> dict[str, object]:
    from nanobanana_queue.workers.evolink.models import GenerationRequest

    return GenerationRequest.model_validate({"prompt": "cluster orphan"}).to_api_json()


@pytest.mark.faults
def test_a_cluster_master_sigkilled_mid_run_is_replaced_by_its_replica_and_no_job_is_lost(
    stack: Stack, redis_cluster_with_replicas: RedisCluster
) -> None:
    cluster = redis_cluster_with_replicas
    stack.overrides["NBQ_REDIS_URL"] = cluster.url
    # A submit still writing its task id through the failover is not "stuck" (the test
    # stack's 3 s would let the reconciler declare its outcome unknown under it; the
    # production default, 120 s, is above the submit's time limit)
    stack.overrides["NBQ_STUCK_AFTER_S"] = "30"
    # Polls held a moment so that the jobs are in flight when a master dies
    stack.emulator.add_fault(endpoint="query", action="delay", seconds=1.0, count=JOBS)
    worker = stack.start_worker(concurrency=8)
    producer = stack.producer()
    store = producer.runtime.store
    job_ids = [
        producer.enqueue({"prompt": f"cluster failover {i}", "quality": "1K"}).job_id
        for i in range(JOBS)
    ]
    wait_until(lambda: store.count_in_state(JobState.GENERATING) >= 4, what="jobs generating")
    # When the master holding the most of these jobs is SIGKILLed
    by_master: dict[int, int] = {}
    for job_id in job_ids:
        port = cluster.master_of(store.key(job_id))
        by_master[port] = by_master.get(port, 0) + 1
    victim = max(by_master, key=lambda port: by_master[port])
    cluster.kill(victim)
    wait_until(  # the other nodes mark it failed and its replica takes its slots
        lambda: all(cluster.master_of(store.key(j)) in cluster.procs for j in job_ids),
        timeout_s=60,
        what="the replica to take over the killed master's slots",
    )
    cluster.wait_ok()
    # Then its replica took over and every job ends stored, paid once, same worker
    records = stack.wait_all(producer, job_ids, timeout_s=120)
    assert worker.poll() is None
    assert_nothing_lost(records)
    assert_one_create_each(stack, records)
