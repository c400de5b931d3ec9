"""``WAIT`` on a Redis Cluster store when a shard's replica does not follow, or the write
has to be sent again (docs/operations.md, "The job store on Redis Cluster").

A frozen replica (``SIGSTOP``, its link cut by its master) cannot acknowledge: the creates
and task ids of the jobs on that master are reported (``store_write_not_replicated``,
naming the job) and still succeed; jobs on the other masters wait as usual. A write that
meets a moved slot or loses its answer goes through the cluster client instead: it lands
once and is reported, since no ``WAIT`` covered it.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import load_settings
from tests.support.redis_cluster import RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def cluster(redis_cluster_with_replicas: RedisCluster) -> RedisCluster:
    return redis_cluster_with_replicas


@pytest.fixture
def runtime(cluster: RedisCluster) -> Iterator[Callable[[int], Runtime]]:
    """``runtime(timeout_ms)``: a Runtime on the cluster with ``WAIT 1``; closed after."""
    made: list[Runtime] = []

    def _runtime(timeout_ms: int) -> Runtime:
        settings = load_settings(
            broker_url="redis://127.0.0.1:1/0",
            redis_url=cluster.url,
            store_wait_replicas=1,
            store_wait_timeout_ms=timeout_ms,
        )
        made.append(Runtime.from_settings(settings))
        return made[-1]

    yield _runtime
    for rt in made:
        rt.redis.close()


def _create_and_record_task(rt: Runtime, job_id: str) -> None:
    """A job's two durable writes: its creation and its create's task id."""
    assert rt.store.create(JobRecord(job_id=job_id))[1]
    assert rt.store.apply(lifecycle.CLAIM_SUBMIT, job_id)[1]
    record, applied = rt.store.apply(
        lifecycle.TASK_CREATED,
        job_id,
        durable=True,
        evolink_task_id=f"task-{job_id}",
        poll_token="p",
    )
    assert applied and record is not None and record.evolink_task_id == f"task-{job_id}"


def _unreplicated(logs: list[MutableMapping[str, Any]]) -> list[Any]:
    return [e["job_id"] for e in logs if e["event"] == "store_write_not_replicated"]


@pytest.fixture
def freeze(cluster: RedisCluster) -> Iterator[Callable[[int], None]]:
    """``freeze(port)``: SIGSTOP that node; thawed again before the cluster stops."""
    frozen: list[int] = []

    def _freeze(port: int) -> None:
        pid = cluster.procs[port].pid
        os.kill(pid, signal.SIGSTOP)
        frozen.append(pid)

    try:
        yield _freeze
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)


def test_a_frozen_replica_reports_its_masters_writes_and_they_still_succeed(
    cluster: RedisCluster, runtime: Callable[[int], Runtime], freeze: Callable[[int], None]
) -> None:
    rt = runtime(2000)  # a healthy replica answers well within; the frozen one never
    candidates = [uuid.UUID(int=n).hex for n in range(1, 13)]
    owner = {j: cluster.master_of(rt.store.key(j)) for j in candidates}
    lagging_master = owner[candidates[0]]
    lagging = [j for j in candidates if owner[j] == lagging_master][:2]
    healthy = list({owner[j]: j for j in candidates if owner[j] != lagging_master}.values())
    assert len(lagging) == 2 and len(healthy) == 2  # jobs on every master
    ids = lagging + healthy
    # Given the replica of one master frozen, and its link cut by the master
    replica = cluster.replica_of(lagging_master)
    for port in set(owner.values()) - {lagging_master}:
        cluster.replica_of(port)  # the other masters' replicas are in sync
    freeze(replica)
    cluster.node(lagging_master).client_kill_filter(_type="replica")
    # When jobs on every master are created and their task ids recorded
    with capture_logs() as logs:
        for job_id in ids:
            _create_and_record_task(rt, job_id)
    # Then both writes of each job on that master are reported, by name, and none other
    assert sorted(_unreplicated(logs)) == sorted(lagging * 2)
    # And every write is on the masters
    assert {rt.store.require(j).evolink_task_id for j in ids} == {f"task-{j}" for j in ids}


def test_a_write_whose_slot_moved_follows_the_redirect_lands_once_and_is_reported(
    cluster: RedisCluster, runtime: Callable[[int], Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime(10_000)  # generous: healthy replicas answer
    job_id = uuid.UUID(int=1).hex
    key = rt.store.key(job_id)
    cluster_client: Any = rt.redis
    right = cluster_client.get_node_from_key(key)
    wrong = next(n for n in cluster_client.get_primaries() if n.name != right.name)
    # Given a client whose slot map is stale (as after a resharding): the job's slot is
    # believed to be on another master, which answers MOVED
    monkeypatch.setattr(cluster_client, "get_node_from_key", lambda *_a, **_k: wrong)
    with capture_logs() as logs:
        _create_and_record_task(rt, job_id)
    # Then both durable writes landed on the right master, reported as not waited for
    assert [(e["job_id"], e["rerouted"]) for e in logs if "rerouted" in e] == [
        (job_id, "MovedError"),
        (job_id, "MovedError"),
    ]
    assert rt.store.require(job_id).evolink_task_id == f"task-{job_id}"
    assert cluster.node(cluster.master_of(key)).exists(key) == 1


def test_a_write_whose_answer_was_lost_is_sent_again_without_doubling_its_effect(
    cluster: RedisCluster, runtime: Callable[[int], Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime(10_000)  # generous: healthy replicas answer
    job_id = uuid.UUID(int=2).hex
    cluster_client: Any = rt.redis
    node = cluster_client.get_redis_connection(
        cluster_client.get_node_from_key(rt.store.key(job_id))
    )
    real_pipeline = node.pipeline

    def pipeline_losing_its_answer(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        run = pipe.execute

        def execute(*a: Any, **k: Any) -> Any:
            run(*a, **k)  # the script ran and WAIT answered; the connection then drops
            raise redis.ConnectionError("answer lost")

        pipe.execute = execute
        return pipe

    # Given a master whose every answer to a durable write is lost after the write
    monkeypatch.setattr(node, "pipeline", pipeline_losing_its_answer)
    with capture_logs() as logs:
        _create_and_record_task(rt, job_id)
    # Then the writes sent again found their own run: created and applied once each
    assert _unreplicated(logs) == [job_id, job_id]
    record = rt.store.require(job_id)
    assert record.state is JobState.GENERATING and record.evolink_task_id == f"task-{job_id}"
    counts = cluster_client.hgetall(rt.store.counter_key(job_id))  # labels as JSON
    assert {k.decode(): int(v) for k, v in counts.items()} == {
        '["queued"]': 1,
        '["submitting"]': 1,
        '["generating"]': 1,
    }
