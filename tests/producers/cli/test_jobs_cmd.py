"""``nbq jobs`` and ``nbq status`` at an 80-column terminal: states, reasons, prompts and
ids whole (issue 31, item 2)."""

from __future__ import annotations

from collections.abc import Callable

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobError, JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from tests.producers.cli.conftest import Nbq


def _failed(producer: Producer, job_id: str, code: str) -> None:
    store = producer.runtime.store
    store.create(JobRecord(job_id=job_id, request={"prompt": "a very long prompt " * 5}))
    store.apply(lifecycle.FAIL, job_id, error=JobError(code=code, message="m"))


def test_the_jobs_table_at_80_columns_keeps_states_reasons_and_ids_whole(
    nbq: Nbq, producer_for: Callable[[], Producer]
) -> None:
    producer = producer_for()
    long_id = "f" * 32  # a generated id's length
    _failed(producer, long_id, "content_policy_violation")
    producer.enqueue({"prompt": "a quiet harbour", "quality": "1K"}, job_id="q1", producer="al")
    producer.runtime.store.apply(
        lifecycle.NOTE_WAITING, "al~q1", waiting_reason="submissions paused: quota"
    )
    done = nbq("jobs")
    assert done.code == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    text = done.stdout
    for whole in (long_id, "failed", "content_policy_violation", "al~q1", "queued",
                  "a quiet harbour", "producer al"):  # fmt: skip
        assert whole in text, (whole, text)
    assert "submissions paused:" in text and "quota" in text
    assert "…" in text  # the long prompt is cut to the id's width, the ids are not


def test_status_shows_the_prompt_size_and_creation_time(
    nbq: Nbq, producer_for: Callable[[], Producer]
) -> None:
    producer_for().enqueue({"prompt": "a [red] fox", "size": "16:9", "quality": "1K"},
                           job_id="s1")  # fmt: skip
    done = nbq("status", "s1")
    assert done.code == 0, done.stderr
    assert "a [red] fox" in done.stdout  # user text, never rich markup
    assert "16:9 · 1K" in done.stdout and " UTC" in done.stdout


def test_cancel_with_json_prints_the_record_and_a_cancelled_job_waits_for_nothing(
    nbq: Nbq, producer_for: Callable[[], Producer]
) -> None:
    producer_for().enqueue({"prompt": "a fox", "quality": "1K"}, job_id="c1")
    view = nbq("cancel", "c1", "--json").json()
    assert view["state"] == JobState.CANCELLED.value and view["waiting_reason"] is None
    assert nbq("cancel", "c1").stdout.strip() == "c1 cancelled"
