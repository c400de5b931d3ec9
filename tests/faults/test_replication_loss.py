"""What asynchronous replication loses, shown on a real Sentinel group.

A replica that has fallen behind (here: frozen, its link cut) is promoted when the master
dies: every create the master acknowledged after the link went is gone. Without ``WAIT``
nobody is told; with ``NBQ_STORE_WAIT_REPLICAS`` each such create is reported at enqueue
time (``store_write_not_replicated``, naming the job), so every lost job was reported
before it was lost — the count the operator needs (docs/operations.md, "Sentinel").
"""

from __future__ import annotations

import os
import signal

import pytest
from structlog.testing import capture_logs

from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import load_settings
from tests.support.sentinel import MASTER_NAME, SentinelGroup

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BEFORE = 10  # creates replicated before the replica falls behind
DURING = 10  # creates acknowledged by the master alone


def _runtime(group: SentinelGroup, wait_replicas: int) -> Runtime:
    return Runtime.from_settings(
        load_settings(
            broker_url=group.url(),
            redis_sentinel_master=MASTER_NAME,
            store_wait_replicas=wait_replicas,
            store_wait_timeout_ms=100,
        )
    )


@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_a_failover_to_a_lagging_replica_loses_only_creates_that_were_reported(
    sentinel_group: SentinelGroup, wait_replicas: int
) -> None:
    rt = _runtime(sentinel_group, wait_replicas)
    replicated = [rt.store.create(JobRecord(job_id=f"ok-{n}"))[0].job_id for n in range(BEFORE)]
    assert rt.store.redis.wait(1, 2000) == 1
    # Given a replica that stops following: frozen, and its link cut by the master
    replica_proc = sentinel_group.replica_proc
    assert replica_proc is not None and sentinel_group.master.proc is not None
    os.kill(replica_proc.pid, signal.SIGSTOP)
    master = sentinel_group.master.client()
    master.client_kill_filter(_type="replica")
    # When the master acknowledges more creates on its own, then dies
    with capture_logs() as logs:
        acknowledged = [
            rt.store.create(JobRecord(job_id=f"late-{n}"))[0].job_id for n in range(DURING)
        ]
    sentinel_group.kill_master()
    os.kill(replica_proc.pid, signal.SIGCONT)
    sentinel_group.wait_failover()
    # Then the lagging replica, now master, has the replicated jobs and not the late ones
    assert all(rt.store.get(j) is not None for j in replicated)
    lost = [j for j in acknowledged if rt.store.get(j) is None]
    print(f"\nreplication loss (WAIT {wait_replicas}): {len(lost)} of {DURING} lost")
    assert lost == acknowledged
    reported = {e.get("job_id") for e in logs if e["event"] == "store_write_not_replicated"}
    if wait_replicas:
        # And with WAIT every lost job was reported when it was enqueued
        assert set(lost) <= reported
    else:
        # And without it the loss is silent
        assert reported == set()
