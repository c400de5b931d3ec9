"""The job store on a real Sentinel group: a SIGKILLed master is followed without a restart,
and with ``WAIT`` every create a caller was told about is on the promoted replica."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import load_settings
from tests.support.procs import wait_until
from tests.support.sentinel import MASTER_NAME, SentinelGroup

pytestmark = pytest.mark.integration


def test_store_breaker_and_limiter_follow_a_failover_and_keep_every_acknowledged_create(
    sentinel_group: SentinelGroup,
) -> None:
    settings = load_settings(
        broker_url=sentinel_group.url(),
        redis_sentinel_master=MASTER_NAME,
        store_wait_replicas=1,
        store_wait_timeout_ms=200,
    )
    rt = Runtime.from_settings(settings)
    told: list[str] = []
    stop = threading.Event()

    def create_loop() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            job_id = f"{threading.get_ident()}-{n}"
            while True:  # as a producer would: the same id again until the store answers
                try:
                    record, _ = rt.store.create(JobRecord(job_id=job_id))
                    break
                except redis.RedisError:  # refused loudly (a failover slower than retries);
                    time.sleep(0.1)  # its write may or may not have landed: ask again
            told.append(record.job_id)

    writers = [threading.Thread(target=create_loop, daemon=True) for _ in range(3)]
    for writer in writers:
        writer.start()
    wait_until(lambda: len(told) >= 200, what="creates before the kill")
    # When the master dies mid-write
    sentinel_group.kill_master()
    sentinel_group.wait_failover()
    before = len(told)
    wait_until(lambda: len(told) >= before + 50, timeout_s=60, what="creates on the new master")
    stop.set()
    for writer in writers:
        writer.join(timeout=30)
    # Then every acknowledged create is there, and the other parts answer too
    pool = rt.store.redis.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.get_master_address()[1] == sentinel_group.replica.port
    missing = [j for j in told if rt.store.get(j) is None]
    assert missing == []
    assert rt.store.count_in_state(JobState.QUEUED) == len(told)
    assert rt.breaker.may_submit() == (True, 0.0)
    assert rt.limiter.acquire("create") == 0.0
