"""Result links that cannot be stored: the job fails with a clear reason, the bucket stays clean.

Expired links, a body that is not an image and a body over ``NBQ_MAX_RESULT_BYTES`` are
permanent: retrying the same signed link cannot help, so the job fails at once with
``result_expired``, ``not_an_image`` or ``result_too_large``, and nothing (no object, no
manifest, no unfinished multipart upload) is left under its prefix.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import assert_images_intact, assert_nothing_in_bucket
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]

#: Small enough that a 4 MB body is "too large", big enough for the emulator's test images.
MAX_RESULT_BYTES = 1_000_000

#: prompt marker → (fault rule on the file endpoint, expected code, words in the message)
CASES: dict[str, tuple[dict[str, Any], str, tuple[str, ...]]] = {
    "expired": ({"action": "expire_results"}, "result_expired", ("expired",)),
    "notimage": ({"action": "not_image"}, "not_an_image", ("not a", "image")),
    "huge": (
        {"action": "large_file", "bytes": 4 * MAX_RESULT_BYTES},
        "result_too_large",
        ("bytes", str(MAX_RESULT_BYTES)),
    ),
    "hugechunked": (
        {"action": "large_file", "bytes": 4 * MAX_RESULT_BYTES, "chunked": True},
        "result_too_large",
        ("bytes", str(MAX_RESULT_BYTES)),
    ),
}


def _unfinished_uploads(stack: Stack, prefix: str) -> list[str]:
    """Multipart uploads still open under ``prefix`` (an aborted upload leaves none)."""
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3.url,
        aws_access_key_id=stack.s3.access_key,
        aws_secret_access_key=stack.s3.secret_key,
        region_name=stack.s3.region,
    )
    answer = s3.list_multipart_uploads(Bucket=stack.s3.bucket, Prefix=prefix)
    return [str(u["Key"]) for u in answer.get("Uploads", [])]


@pytest.mark.parametrize("marker", list(CASES))
def test_a_result_that_cannot_be_stored_fails_the_job_with_its_reason_and_leaves_nothing(
    stack: Stack, marker: str
) -> None:
    rule, code, words = CASES[marker]
    stack.overrides["NBQ_MAX_RESULT_BYTES"] = str(MAX_RESULT_BYTES)
    # Given the result link of one job misbehaves (and a control job's does not)
    fault = stack.emulator.add_fault(endpoint="file", match=f"bad {marker}", **rule)
    stack.start_worker()
    producer = stack.producer()
    bad = producer.enqueue({"prompt": f"bad {marker} result", "quality": "1K"}).job_id
    good = producer.enqueue({"prompt": "good result", "quality": "1K"}).job_id
    records = stack.wait_all(producer, [bad, good])
    # Then the job failed with a reason a person understands
    failed = records[bad]
    assert failed.state is JobState.FAILED, (failed.state, failed.error)
    assert failed.error is not None and failed.error.code == code
    assert failed.error.retryable is False
    message = failed.error.message.lower()
    assert all(w.lower() in message for w in words), failed.error.message
    assert "signature=" not in message  # the signed link's secret part is never recorded
    # And nothing of it was left in the bucket, not even an unfinished upload
    assert_nothing_in_bucket(stack, bad)
    assert _unfinished_uploads(stack, f"images/{bad}/") == []
    # And the permanent failure was not retried again and again
    hits = next(r["hits"] for r in stack.emulator.faults() if r["id"] == fault["id"])
    assert 1 <= hits <= 2  # the first download; a reconciler re-drive at most once more
    # While the control job next to it was stored intact
    assert records[good].state is JobState.STORED
    assert_images_intact(stack, {good: records[good]})
