"""What ``nbq status --json`` and the ingress show of a record (issue 31, item 10)."""

from __future__ import annotations

from nanobanana_queue.workers.jobs.record import JobRecord, StoredObject
from nanobanana_queue.workers.jobs.state import JobState


def test_a_stored_job_counts_its_stored_objects_as_results() -> None:
    obj = StoredObject(key="images/j/0.png", size=3, sha256="a" * 64, content_type="image/png")
    record = JobRecord(job_id="j", state=JobState.STORED, objects=[obj])
    assert record.public_view()["result_count"] == 1


def test_the_view_has_attempts_once() -> None:
    view = JobRecord(job_id="j", attempts=2).public_view()
    assert view["attempts"] == 2 and "create_attempts" not in view
