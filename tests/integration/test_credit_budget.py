"""Budgets and credit figures on real processes (issue 23, findings 1 and 7).

Real Redis, real Celery workers, the emulator over HTTP; the emulator's own per-task
charges (``/_emulator/stats``) are the independent reader of what was paid.

* A budget holds whatever the concurrency (4 producer processes enqueueing at once while
  workers run) or backlog (enqueues while no worker runs, drained later): the credits the
  emulator charged never pass a limit; cancelled jobs free their hold.
* The figures agree to the cent after a mixed run (a recreated task, a permanent failure
  retried with --yes, cancels, a 402 wait): ``nbq credits --json``, the job records and
  the emulator's charges per task and per job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import defaultdict

import pytest

from nanobanana_queue.producers.errors import CreditBudgetExceededError, MayPayTwiceError
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import wait_for_hits
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

#: Five 1K jobs (1.6 each) per producer, eight in all.
PER_PRODUCER, TOTAL = 8.0, 12.8

_ENQUEUER = textwrap.dedent(
    """
    import json, sys
    from nanobanana_queue.producers import CreditBudgetExceededError, Producer
    name, count = sys.argv[1], int(sys.argv[2])
    producer, accepted = Producer(), []
    for n in range(count):
        try:
            handle = producer.enqueue(
                {"prompt": f"budget {name} {n}", "quality": "1K"}, producer=name
            )
            accepted.append(handle.job_id)
        except CreditBudgetExceededError:
            pass
    print(json.dumps(accepted))
    """
)


def _budgets(stack: Stack) -> None:
    stack.overrides.update(
        NBQ_CREDIT_LIMIT_DAILY=str(TOTAL), NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER=str(PER_PRODUCER)
    )


def _charged_by_producer(stack: Stack) -> dict[str, float]:
    """What the emulator charged, per producer (its keys are ``nbq-<producer>~<id>-<n>``)."""
    out: dict[str, float] = defaultdict(float)
    for key, credits in stack.emulator.stats()["charges_by_idempotency_key"].items():
        out[key.removeprefix("nbq-").split("~", 1)[0]] += credits
    return {name: round(total, 6) for name, total in out.items()}


def nbq_credits(stack: Stack) -> dict[str, object]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("NBQ_")}
    done = subprocess.run(
        [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "credits", "--json"],
        env={**env, **stack.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, object] = json.loads(done.stdout)
    return data


def test_enqueues_from_four_processes_at_once_never_pay_past_either_budget(
    stack: Stack,
) -> None:
    # Given both budgets, workers running, and 4 processes enqueueing 50 jobs each at once
    _budgets(stack)
    stack.start_worker(concurrency=4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ENQUEUER, name, "50"],
            env=stack.env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("alice", "alice", "bob", "bob")
    ]
    accepted = [job for proc in procs for job in json.loads(proc.communicate(timeout=120)[0])]
    # Then at most five jobs per producer and eight in all were accepted, and every one
    # of them ends stored: the budget refused at enqueue, nothing was dropped later
    records = stack.wait_all(stack.producer(), accepted)
    assert {r.state for r in records.values()} == {JobState.STORED}
    per_producer: dict[str, int] = defaultdict(int)
    for job_id in accepted:
        per_producer[job_id.split("~", 1)[0]] += 1
    assert max(per_producer.values()) <= 5 and len(accepted) == 8  # the total binds first
    # And what the emulator charged stays within each budget, and is what nbq says
    charged = _charged_by_producer(stack)
    assert all(total <= PER_PRODUCER for total in charged.values()), charged
    assert sum(charged.values()) <= TOTAL and len(accepted) * 1.6 == round(sum(charged.values()), 6)
    report = nbq_credits(stack)
    assert report["paid_today"] == round(sum(charged.values()), 6)
    assert report["reserved_today"] == 0


def test_a_backlog_enqueued_with_no_worker_is_drained_within_the_budget(stack: Stack) -> None:
    # Given a budget of five 1K jobs and no worker running: 50 enqueues one after another
    stack.overrides["NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER"] = str(PER_PRODUCER)
    producer = stack.producer()
    accepted, refused = [], 0
    for n in range(50):
        try:
            accepted.append(
                producer.enqueue({"prompt": f"backlog {n}", "quality": "1K"}, producer="shop")
            )
        except CreditBudgetExceededError:
            refused += 1
    assert (len(accepted), refused) == (5, 45)
    assert nbq_credits(stack)["reserved_today"] == PER_PRODUCER
    # A cancelled job frees its hold: one more is accepted, then none
    accepted[0].cancel()
    accepted.append(producer.enqueue({"prompt": "backlog 51", "quality": "1K"}, producer="shop"))
    with pytest.raises(CreditBudgetExceededError, match="NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER"):
        producer.enqueue({"prompt": "backlog 52", "quality": "1K"}, producer="shop")
    # When a worker drains the backlog
    stack.start_worker(concurrency=4)
    records = stack.wait_all(producer, [h.job_id for h in accepted])
    states = sorted(r.state.value for r in records.values())
    assert states == ["cancelled"] + ["stored"] * 5
    # Then the paid credits are exactly the five stored jobs': within the budget
    assert _charged_by_producer(stack) == {"shop": PER_PRODUCER}
    report = nbq_credits(stack)
    assert (report["paid_today"], report["reserved_today"]) == (PER_PRODUCER, 0)
    assert report["producers"] == {"shop": {"paid": PER_PRODUCER, "reserved": 0.0}}


def test_credit_figures_agree_with_the_emulators_charges_after_a_mixed_run(
    stack: Stack,
) -> None:
    # Given a budget (so jobs hold), and faults: one task fails retryably (recreated: two
    # paid creates), one fails for good (then retried with --yes: paid again, fails
    # again), two creates answered 402 (a quota wait: attempts, no charge)
    stack.overrides["NBQ_CREDIT_LIMIT_DAILY"] = "100"
    emulator = stack.emulator
    emulator.add_fault(
        endpoint="create", action="fail_task", code="service_error", match="flaky", count=1
    )
    emulator.add_fault(
        endpoint="create", action="fail_task", code="content_policy_violation", match="banned"
    )
    producer = stack.producer()
    cancelled_queued = producer.enqueue({"prompt": "never sent", "quality": "2K"}).job_id
    producer.cancel(cancelled_queued)
    quota = emulator.add_fault(endpoint="create", action="status", status=402, count=2)
    jobs = [
        producer.enqueue({"prompt": prompt, "quality": quality}).job_id
        for prompt, quality in [
            ("plain", "1K"),
            ("flaky once", "2K"),
            ("banned", "1K"),
            ("another plain", "4K"),
        ]
    ]
    flaky, banned = jobs[1], jobs[2]
    stack.start_worker(concurrency=4)
    wait_for_hits(stack, quota, hits=2)
    records = stack.wait_all(producer, jobs)
    assert records[banned].state is JobState.FAILED
    with pytest.raises(MayPayTwiceError, match="permanent"):
        producer.retry(banned)
    producer.retry(banned, accept_may_pay_twice=True)
    wait_until(
        lambda: (
            producer.status(banned).paid_creates == 2
            and producer.status(banned).state is JobState.FAILED
        ),
        timeout_s=60,
        what="the retried job to fail again",
    )
    emulator.clear_faults()
    # And one job cancelled after its create was paid (its polls held back meanwhile)
    emulator.add_fault(endpoint="query", action="delay", seconds=2, match="cancelled while")
    late = producer.enqueue({"prompt": "cancelled while generating", "quality": "1K"}).job_id
    wait_until(lambda: producer.status(late).paid_creates == 1, what="its create")
    producer.cancel(late)
    emulator.clear_faults()
    jobs += [late, cancelled_queued]
    records = {job: producer.status(job) for job in jobs}

    stats = emulator.stats()
    by_key = stats["charges_by_idempotency_key"]

    def emulator_paid(record: JobRecord) -> float:
        charges = [float(v) for k, v in by_key.items() if k.startswith(f"nbq-{record.job_id}-")]
        return round(sum(charges), 6)

    # Then each job's credits_paid and paid_creates are the emulator's, task by task
    for record in records.values():
        assert record.credits_paid == emulator_paid(record), record.job_id
        tasks = [k for k in by_key if k.startswith(f"nbq-{record.job_id}-")]
        assert record.paid_creates == len(tasks), record.job_id
        assert record.credits_reserved == 0.0, record.job_id
    assert records[flaky].paid_creates == 2 and records[banned].paid_creates == 2
    assert records[cancelled_queued].credits_paid == 0.0
    assert sum(r.attempts for r in records.values()) == stats["creates_accepted"] + 2  # 402s
    # And nbq credits agrees with both, to the cent
    report = nbq_credits(stack)
    paid = round(sum(r.credits_paid for r in records.values()), 6)
    assert report["paid_today"] == paid == stats["credits_charged"]
    assert report["reserved_today"] == 0
    assert report["paid_by_failed_jobs"] == records[banned].credits_paid
    assert report["paid_by_cancelled_jobs"] == records[late].credits_paid
