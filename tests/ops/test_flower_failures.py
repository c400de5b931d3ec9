"""Flower tells the truth about failed jobs: one FAILURE per failed job, named for why.

A real worker and a real Flower (``nbq flower``, basic auth); failures injected through
the emulator's ``/_emulator/faults`` API, one kind per prompt marker; invalid requests
sent raw with ``send_task`` as another service would. Then Flower's task list, its
``flower_events_total`` and the project exporter must agree with the job records.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.contract import TASK_GENERATE, TASK_POLL, TASK_SUBMIT
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.metrics_exporter import build_registry
from tests.ops.test_flower import (  # noqa: F401 - the fixture is used by name
    QUOTA_ERRORS,
    Flower,
    events_total,
    flower,
    wait_flower_sees_worker,
)
from tests.support.metrics_guard import settled
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

#: prompt marker → (emulator fault rule, the job's error code, the task's exception class)
FAULTS: dict[str, tuple[dict[str, Any], str, str]] = {
    "FORBIDDEN": (
        {"endpoint": "create", "action": "fail_task", "code": "content_policy_violation"},
        "content_policy_violation",
        "ContentPolicyViolationError",
    ),
    "NOTIMG": ({"endpoint": "file", "action": "not_image"}, "not_an_image", "NotAnImageError"),
    "EXPIRED": (
        {"endpoint": "file", "action": "expire_results"},
        "result_expired",
        "ResultExpiredError",
    ),
    "PRIVATE": (
        {
            "endpoint": "query",
            "action": "rewrite_results",
            "url": "http://169.254.169.254/latest/meta-data",
        },
        "unsafe_result_url",
        "UnsafeUrlError",
    ),
}


def _job_id_of(task: dict[str, Any]) -> str | None:
    found = re.search(r"'job_id': '([^']+)'", str(task.get("kwargs")))
    return found.group(1) if found else None


def _failed_by_reason(stack: Stack) -> dict[str, float]:
    text = build_registry(stack.settings()).collect()
    return {
        s.labels["reason"]: s.value
        for family in text
        if family.name == "nbq_jobs_failed"
        for s in family.samples
        if s.name == "nbq_jobs_failed_total"
    }


def test_each_failed_job_ends_one_task_in_failure_named_for_its_reason(
    stack: Stack,
    flower: Flower,  # noqa: F811 - the imported fixture
) -> None:
    # Given a worker, a Flower receiving its events and one fault rule per failure kind
    stack.start_worker(name="w1")
    wait_flower_sees_worker(flower)
    for marker, (rule, _, _) in FAULTS.items():
        stack.emulator.add_fault(**rule, match=marker)
    producer = stack.producer()

    # When two jobs of each failing kind, three good jobs and an invalid raw request run
    expected: dict[str, str] = {}
    for marker, (_, code, _) in FAULTS.items():
        for i in range(2):
            expected[producer.enqueue({"prompt": f"{marker} {i}", "quality": "1K"}).job_id] = code
    good = [producer.enqueue({"prompt": f"fine {i}", "quality": "1K"}).job_id for i in range(3)]
    celery = create_app(stack.settings())
    for _ in range(2):  # delivered twice: one job, one failure
        celery.send_task(
            TASK_GENERATE, kwargs={"request": {"prompt": "x", "quality": "9K"}, "job_id": "raw-bad"}
        )
    expected["raw-bad"] = "invalid_request"
    records = stack.wait_all(producer, [*expected, *good], timeout_s=120)

    assert {job_id: records[job_id].state for job_id in good} == dict.fromkeys(
        good, JobState.STORED
    )
    assert {job_id: (r.error.code if r.error else None) for job_id, r in records.items()
            if job_id in expected} == expected  # fmt: skip

    # And a failed job's message is delivered again (a duplicate submit finds it failed)
    for failed_id in list(expected)[:2]:
        celery.send_task(TASK_SUBMIT, kwargs={"job_id": failed_id})

    # Then Flower lists exactly one FAILURE per failed job, with the reason's exception
    def failures_listed() -> dict[str, dict[str, Any]]:
        return flower.tasks(state="FAILURE")

    wait_until(
        lambda: len(failures_listed()) >= len(expected), timeout_s=30, what="flower failures"
    )

    def submits_succeeded() -> bool:
        done = flower.tasks(taskname=TASK_SUBMIT, state="SUCCESS")
        return len(done) >= 2

    wait_until(submits_succeeded, timeout_s=30, what="the duplicate submits to run")
    rows = failures_listed()
    by_job = Counter(_job_id_of(task) for task in rows.values())
    assert by_job == Counter(dict.fromkeys(expected, 1)), rows
    for task in rows.values():
        job_id = _job_id_of(task)
        assert job_id is not None
        wanted = next(
            (cls for _, code, cls in FAULTS.values() if code == expected[job_id]),
            "InvalidRequestError",
        )
        assert str(task["exception"]).startswith(f"{wanted}("), task
        assert f"job {job_id} failed ({expected[job_id]})" in task["exception"]
        assert "What to do:" in task["exception"]
        assert not task.get("retries")
    print("flower failures:", sorted((t["name"], t["exception"][:90]) for t in rows.values()))

    # And no stored job has a FAILURE row, and polls that re-scheduled never failed/retried
    assert not set(good) & set(by_job)
    assert flower.tasks(state="RETRY") == {}
    text = flower.metrics()
    failed_events = sum(
        events_total(text, task=name, kind="task-failed")
        for name in {t["name"] for t in rows.values()}
    )
    assert failed_events == len(expected)
    assert events_total(text, task=TASK_POLL, kind="task-retried") == 0

    # And the exporter counts each failed job once, by reason
    # (written within NBQ_METRICS_FLUSH_S of the job's end)
    reasons = Counter(expected.values())
    assert settled(lambda: _failed_by_reason(stack), lambda c: c == reasons) == reasons
    # And no result backend stores the FAILURE states (none is configured)
    assert stack.redis.client().keys("celery-task-meta-*") == []

    # And no secret reaches Flower through the new exceptions
    shown = flower.get("/api/tasks", limit=10000).text
    for secret in (stack.env()["NBQ_EVOLINK_API_KEY"], stack.env()["NBQ_S3_SECRET_KEY"]):
        assert secret not in shown

    # When the API then answers 402, the waiting submit shows as RETRY naming quota
    stack.emulator.set_credits(0)
    waiting = producer.enqueue({"prompt": "quota wait", "quality": "1K"}).job_id

    def quota_retry() -> bool:
        return any(
            any(name in str(t.get("exception")) for name in QUOTA_ERRORS)
            and _job_id_of(t) == waiting
            for t in flower.tasks(state="RETRY").values()
        )

    wait_until(quota_retry, timeout_s=30, interval_s=0.25, what="a quota retry in flower")
    assert producer.status(waiting).state is JobState.QUEUED  # waiting, not failed
    stack.emulator.set_credits(None)
    assert stack.wait_all(producer, [waiting], timeout_s=90)[waiting].state is JobState.STORED
    assert len(flower.tasks(state="FAILURE")) == len(expected)
