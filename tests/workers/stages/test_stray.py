"""A stage message for a job that never existed goes to the dead letters: no phantom
failed job, no ``record_lost`` counted (issue 31, item 11)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from nanobanana_queue.workers.deadletters import DeadLetterStore
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages.download import download
from nanobanana_queue.workers.stages.rescue import RECORD_LOST
from nanobanana_queue.workers.stages.stray import UNKNOWN_JOB
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server

_prefixes = itertools.count()


@pytest.fixture
def rt(session_redis: RedisServer, session_s3: S3Server) -> Iterator[Runtime]:
    n = next(_prefixes)
    s3: dict[str, Any] = {k[4:].lower(): v for k, v in session_s3.env().items()}
    settings = Settings(
        broker_url=session_redis.url, key_prefix=f"stray{n}", s3_prefix=f"stray{n}", **s3
    )
    runtime = Runtime.from_settings(settings)
    runtime.epoch().check()  # a worker reads the store's epoch at start
    yield runtime
    runtime.redis.close()


def test_a_stray_download_for_a_job_that_never_existed_is_a_dead_letter(rt: Runtime) -> None:
    # Given no job "whatever" (as `send_task("nbq.download", args=["whatever"])` sends)
    outcome = download(rt, "whatever")
    # Then no job is invented, and the message is kept where a person looks for it
    assert outcome.label == UNKNOWN_JOB
    assert rt.store.get("whatever") is None
    letters = DeadLetterStore.from_settings(rt.settings, rt.redis).list()
    assert [(x.reason, x.queue, x.task) for x in letters] == [
        (UNKNOWN_JOB, "download", "nbq.download")
    ]
    assert "'whatever'" in letters[0].detail


def test_after_a_store_reset_a_download_without_a_task_id_still_reports_the_job_lost(
    rt: Runtime,
) -> None:
    # Given the store lost its data (the epoch marker is gone, as after FLUSHALL)
    rt.redis.delete(rt.store.epoch_key)
    rt.epoch().last_check = 0.0
    # Then a download for a vanished job is a lost job, as before
    assert download(rt, "vanished").label == "lost"
    record = rt.store.require("vanished")
    assert record.error is not None and record.error.code == RECORD_LOST
