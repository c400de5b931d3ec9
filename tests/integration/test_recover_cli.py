"""``nbq retry`` and ``nbq adopt`` end to end: a person decides about a failed job.

The emulator ignores ``Idempotency-Key`` (the vendor documents no support), and a create's
answer is dropped after its task was made and charged: the job fails ``outcome_unknown``.
``nbq adopt`` attaches that paid task (nothing paid again); ``nbq retry`` re-sends, and
for such a job only with ``--yes`` (it pays twice, as it warns).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nanobanana_queue.producers.errors import MayPayTwiceError
from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import creates_per_job
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


def nbq(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("NBQ_")}
    return subprocess.run(
        [sys.executable, "-m", "nanobanana_queue.producers.cli.main", *args],
        env={**env, **stack.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )


def said(output: str) -> str:
    """The text with rich's line wrapping undone."""
    return " ".join(output.split())


def _failed_unknown(stack: Stack, prompt: str) -> tuple[str, str]:
    """A job whose create answer was dropped: ``(job_id, the paid task's id)``."""
    stack.emulator.add_fault(endpoint="create", action="drop_after_create", count=1, match=prompt)
    producer = stack.producer()
    job_id = producer.enqueue({"prompt": prompt, "quality": "1K"}).job_id
    record = stack.wait_all(producer, [job_id])[job_id]
    assert record.state is JobState.FAILED and record.error is not None
    assert record.error.code == "outcome_unknown"
    before = {t["id"] for t in stack.emulator._control("GET", "tasks")}
    tasks = [
        t for t in before if stack.emulator.task(t)["idempotency_key"].startswith(f"nbq-{job_id}-")
    ]
    assert len(tasks) == 1
    return job_id, tasks[0]


def test_adopt_attaches_the_paid_task_and_the_job_is_stored_without_a_second_create(
    stack: Stack,
) -> None:
    stack.start_worker()
    job_id, task_id = _failed_unknown(stack, "adopt me")

    # A made-up id: the worker's re-fetch gets 404, the job stays failed
    unknown = nbq(stack, "adopt", job_id, "task-unified-1-nosuchid", "--wait", "5")
    assert unknown.returncode == 1
    assert "refused: the API does not know this task" in said(unknown.stderr)
    assert nbq(stack, "adopt", job_id, "not a task id!").returncode == 1

    adopted = nbq(stack, "adopt", job_id, task_id)
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert f"task {task_id} adopted" in adopted.stdout
    record = stack.wait_all(stack.producer(), [job_id])[job_id]
    assert record.state is JobState.STORED and record.evolink_task_id == task_id
    assert (record.attempts, record.paid_creates) == (1, 1)
    assert creates_per_job(stack, [job_id]) == {job_id: 1}
    status = json.loads(nbq(stack, "status", job_id, "--json").stdout)
    assert status["paid_creates"] == 1 and status["attempts"] == 1
    assert "job_adopt_requested" in said(adopted.stderr)  # logged where the person acted
    assert "task_adopted" in stack.worker_logs()


def test_retry_of_an_unknown_outcome_job_warns_and_needs_yes_then_pays_again(
    stack: Stack,
) -> None:
    stack.start_worker()
    job_id, _ = _failed_unknown(stack, "retry me")

    refused = nbq(stack, "retry", job_id)
    assert refused.returncode == 1
    assert "may pay twice" in said(refused.stderr) and "--yes" in refused.stderr
    assert stack.producer().status(job_id).state is JobState.FAILED  # unchanged

    confirmed = nbq(stack, "retry", job_id, "--yes")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    record = stack.wait_all(stack.producer(), [job_id])[job_id]
    assert record.state is JobState.STORED
    assert (record.attempts, record.paid_creates) == (2, 1)  # one answered; one lost
    assert creates_per_job(stack, [job_id]) == {job_id: 2}  # paid twice, as warned


def test_retry_of_a_permanent_failure_says_why_and_needs_yes(stack: Stack) -> None:
    stack.emulator.add_fault(
        endpoint="create", action="fail_task", code="content_policy_violation", count=1
    )
    stack.start_worker()
    producer = stack.producer()
    job_id = producer.enqueue({"prompt": "a policy question", "quality": "1K"}).job_id
    failed = stack.wait_all(producer, [job_id])[job_id]
    assert failed.error is not None and failed.error.code == "content_policy_violation"

    refused = nbq(stack, "retry", job_id)  # retryable: false — it would pay for nothing
    assert refused.returncode == 1
    assert "content_policy_violation" in said(refused.stderr) and "--yes" in refused.stderr
    assert "permanent" in said(refused.stderr)
    assert producer.status(job_id).state is JobState.FAILED  # unchanged, nothing sent
    with pytest.raises(MayPayTwiceError, match="permanent"):
        producer.retry(job_id)

    assert nbq(stack, "retry", job_id, "--yes").returncode == 0
    record = stack.wait_all(producer, [job_id])[job_id]
    assert record.state is JobState.STORED and record.create_seq == 2
    assert failed.evolink_task_id in record.previous_task_ids
    again = nbq(stack, "retry", job_id)  # stored: nothing to retry
    assert again.returncode == 1 and "only failed or outcome_unknown" in said(again.stderr)
