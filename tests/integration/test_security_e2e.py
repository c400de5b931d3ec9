"""Untrusted URLs end to end: a hostile result link fails the job and is never fetched."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize(
    "hostile_url",
    [
        "http://169.254.169.254/latest/meta-data",  # cloud metadata: never allowed
        "http://10.0.0.7/result.png",  # private address, not on the allowlist
        "https://127.0.0.1.nip.io/result.png",  # a name not on the allowlist
        "file:///etc/passwd",
    ],
)
def test_a_result_link_to_a_forbidden_address_fails_the_job_as_unsafe(
    stack: Stack, hostile_url: str
) -> None:
    # Given the API answers with a result link pointing somewhere we must not go
    stack.emulator.add_fault(endpoint="query", action="rewrite_results", url=hostile_url)
    stack.start_worker()
    producer = stack.producer()
    # When a job completes
    job = producer.enqueue({"prompt": "hostile link", "quality": "1K"})
    record = job.wait(60)
    # Then it fails with a clear reason and nothing was stored
    assert record.state is JobState.FAILED
    assert record.error is not None and record.error.code == "unsafe_result_url"
    assert not stack.s3.keys(f"images/{job.job_id}/")
    assert stack.emulator.stats()["file_downloads"] == 0


def test_a_job_id_that_would_escape_its_key_prefix_is_refused_at_enqueue(stack: Stack) -> None:
    from nanobanana_queue.producers import InvalidRequestError

    producer = stack.producer()
    for job_id in ("../x", "a/b", "..", "x" * 129, " spaced", ""):
        with pytest.raises(InvalidRequestError, match="job_id"):
            producer.enqueue({"prompt": "ok"}, job_id=job_id)
    assert stack.redis.client().keys("nbq:job:*") == []
