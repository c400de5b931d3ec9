"""S3 unavailable while results are being stored: downloads retry with backoff.

A hung store (SIGSTOP: connections open, nothing answers) holds each upload in its read
timeout, and the S3 client's own read retry usually outlasts a 20 s freeze; a dead one
(connection refused) fails fast, raising a retryable ``StorageError`` that the download
stage retries with jittered backoff. When the store comes back
within the retry budget every job ends stored; when the outage outlasts it the job fails
with ``storage_unavailable`` and a message that says so. Each test owns its S3 server.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    assert_images_intact,
    assert_nothing_in_bucket,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
)
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

JOBS = 3
#: How long the store stays frozen (real seconds).
OUTAGE_S = 20.0


@pytest.mark.parametrize("kind", ["frozen", "refusing"])
def test_a_20_second_s3_outage_during_downloads_is_retried_until_every_job_is_stored(
    own_s3_stack: Callable[..., Stack], kind: str
) -> None:
    stack = own_s3_stack()
    # Retries spaced up to 4 s and enough of them to outlast the outage
    stack.overrides.update(
        {
            "NBQ_MAX_TRANSIENT_RETRIES": "30",
            "NBQ_RETRY_BACKOFF_BASE_S": "0.5",
            "NBQ_RETRY_BACKOFF_MAX_S": "4",
        }
    )
    stack.start_worker()
    producer = stack.producer()
    # Given S3 freezes (SIGSTOP, state kept) or refuses connections, then jobs reach download
    stack.s3.pause() if kind == "frozen" else stack.s3.stop()
    down_at = time.monotonic()
    try:
        job_ids = enqueue(producer, JOBS, prompt="s3 outage")
        wait_until(
            lambda: all(producer.status(j).state is JobState.DOWNLOADING for j in job_ids),
            timeout_s=60,
            what="every job downloading into the unavailable store",
        )
        # When the outage lasts about 20 s
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    finally:
        stack.s3.resume() if kind == "frozen" else stack.s3.start()
    records = stack.wait_all(producer, job_ids)
    # Then every job is stored intact, with one create each
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)
    if kind == "refusing":  # failing fast, the downloads were retried with backoff
        log = stack.worker_logs()
        assert "download_retry" in log and "storage_unavailable" in log


def test_an_s3_outage_outlasting_the_retries_fails_the_job_with_storage_unavailable(
    own_s3_stack: Callable[..., Stack],
) -> None:
    stack = own_s3_stack()
    stack.overrides["NBQ_MAX_TRANSIENT_RETRIES"] = "2"
    stack.start_worker()
    producer = stack.producer()
    # Given S3 is down (connection refused) for longer than three quick attempts
    stack.s3.stop()
    try:
        job_ids = enqueue(producer, 2, prompt="s3 gone")
        records = stack.wait_all(producer, job_ids)
    finally:
        stack.s3.start()  # empty again, but the bucket exists
    # Then each job failed with storage_unavailable and a message naming the store
    assert_nothing_lost(records, allowed=(JobState.FAILED,))
    for job_id, record in records.items():
        assert record.error is not None and record.error.code == "storage_unavailable"
        assert record.error.retryable is True
        assert "S3" in record.error.message and "download kept failing" in record.error.message
        assert record.evolink_task_id  # the paid task is kept: the job can be resumed
        assert_nothing_in_bucket(stack, job_id)
    assert_one_create_each(stack, job_ids)
