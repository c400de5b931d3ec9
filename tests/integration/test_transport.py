"""Transport: Redis with a password works end to end and the password is never logged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.support.emulator_server import EmulatorServer
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

PASSWORD = "s3cr3t-redis-passw0rd"


@pytest.fixture
def password_stack(
    tmp_path: Path, session_s3: S3Server, session_emulator: EmulatorServer
) -> Iterator[Stack]:
    redis = RedisServer(dir=tmp_path, password=PASSWORD)
    redis.start()
    session_emulator.reset()
    stack = Stack(redis=redis, s3=session_s3, emulator=session_emulator, dir=tmp_path)
    yield stack
    stack.stop_workers()
    redis.stop()


def test_a_password_protected_redis_carries_jobs_and_the_password_never_reaches_logs(
    password_stack: Stack,
) -> None:
    # Given a broker and job store that require a password (redis://:pass@host)
    assert PASSWORD in password_stack.redis.url
    password_stack.start_worker()
    producer = password_stack.producer()
    # When jobs run through it
    jobs = [producer.enqueue({"prompt": f"auth {i}", "quality": "1K"}).job_id for i in range(3)]
    records = password_stack.wait_all(producer, jobs)
    # Then they are stored, and no worker log line holds the password
    assert {r.state for r in records.values()} == {JobState.STORED}
    logs = password_stack.worker_logs()
    assert "job_stored" in logs  # the worker did log its work
    assert PASSWORD not in logs
