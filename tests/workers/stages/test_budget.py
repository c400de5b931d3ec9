"""Daily credit budgets inside the pipeline (issue 23): a raw message's intake holds or
refuses, submit checks again right before the create (a lowered limit, a new day), the
hold is settled to the real charge, kept through a 402 wait, freed when the job fails."""

from __future__ import annotations

from collections.abc import Callable

from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.owners import owners_of
from nanobanana_queue.workers.jobs.record import JobError
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.resilience.credits import day_of
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages import reconcile as reconcile_stage
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.intake import intake
from nanobanana_queue.workers.stages.steps import Retry
from tests.support.emulator_server import EmulatorServer
from tests.workers.stages.conftest import StepLog, age

REQUEST = {"prompt": "budget test", "quality": "1K"}


def _raw(rt: Runtime, job_id: str, producer: str | None = "shop") -> str:
    """A job as a raw ``nbq.generate`` from another service records it (intake)."""
    record = intake(rt, request=dict(REQUEST), job_id=job_id, producer=producer)
    assert record is not None
    return record.job_id


def test_a_raw_message_holds_its_price_or_is_recorded_failed_over_the_budget(
    make_rt: Callable[..., Runtime], emulator_server: EmulatorServer
) -> None:
    rt = make_rt(credit_limit_daily_per_producer=3.2)
    first, second = _raw(rt, "r-1"), _raw(rt, "r-2")
    assert rt.store.require(first).credits_reserved == 1.6
    over = rt.store.require(_raw(rt, "r-3"))
    assert over.state is JobState.FAILED and over.error is not None
    assert over.error.code == "credit_budget_exceeded" and over.error.retryable
    assert "NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER=3.2" in over.error.message
    assert rt.credits().holds_today() == {first: 1.6, second: 1.6}
    assert emulator_server.stats()["creates_accepted"] == 0


def test_submit_settles_the_hold_to_the_real_charge(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    rt = make_rt(credit_limit_daily=10.0)
    job_id = _raw(rt, "s-1")
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    record = rt.store.require(job_id)
    assert (record.credits_reserved, record.credits_paid, record.paid_creates) == (0.0, 1.6, 1)
    day = rt.credits().today()
    assert (day.paid, day.reserved) == (1.6, 0.0)
    assert emulator_server.stats()["charges_by_idempotency_key"] == {f"nbq-{job_id}-1": 1.6}


def test_a_limit_lowered_after_enqueue_refuses_at_submit_and_sends_no_create(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    job_id = _raw(make_rt(credit_limit_daily=10.0), "l-1")
    lowered = make_rt(credit_limit_daily=1.0)
    assert steps(submit_stage.submit(lowered, job_id)) == "over_budget"
    record = lowered.store.require(job_id)
    assert record.state is JobState.FAILED and record.error is not None
    assert record.error.code == "credit_budget_exceeded" and record.credits_reserved == 0.0
    assert "no create was sent" in record.error.message
    assert lowered.credits().today().reserved == 0.0  # the hold is freed
    assert emulator_server.stats()["creates_accepted"] == 0


def test_a_job_queued_on_an_earlier_day_holds_on_todays_book_before_its_create(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    rt = make_rt(credit_limit_daily=10.0)
    job_id = _raw(rt, "d-1")
    # Given its hold is on yesterday's book (moved there as if enqueued before midnight)
    ledger = rt.credits()
    ledger.release(job_id, producer="shop", held_on=day_of())
    ledger._run("hold", "2000-01-01", job_id, producer="shop", micro=1_600_000)
    rt.redis.hset(rt.store.key(job_id), "credits_held_on", "2000-01-01")
    # When it is submitted today
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    # Then today paid the charge, and the old day's hold is gone
    assert ledger.today().paid == 1.6 and ledger.holds_today() == {}
    assert not rt.redis.hget(ledger._keys("2000-01-01", None)[1], job_id)


def test_a_402_keeps_the_hold_and_a_failed_create_frees_it(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    rt = make_rt(credit_limit_daily=10.0)
    quota, bad = _raw(rt, "q-1"), _raw(rt, "b-1")
    emulator_server.add_fault(endpoint="create", action="status", status=402, count=1)
    assert isinstance(submit_stage.submit(rt, quota), Retry)
    waiting = rt.store.require(quota)
    assert waiting.state is JobState.QUEUED and waiting.credits_reserved == 1.6
    assert (waiting.attempts, waiting.paid_creates, waiting.credits_paid) == (1, 0, 0.0)
    rt.breaker.close()
    emulator_server.add_fault(endpoint="create", action="status", status=400, count=1)
    assert steps(submit_stage.submit(rt, bad)) == "failed"
    assert rt.store.require(bad).credits_reserved == 0.0
    assert rt.credits().holds_today() == {quota: 1.6}
    assert rt.credits().today().paid == 0.0


def test_the_reconciler_frees_holds_no_job_will_use_and_keeps_the_others(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    # Given four holds: a producer died before recording its job; a job cancelled whose
    # release was lost; a queued job; a job failed outcome_unknown (it may have been paid)
    rt = make_rt(credit_limit_daily=100.0)
    ledger = rt.credits()
    assert ledger.hold("never-recorded", 2.5, producer="shop").held
    cancelled, queued, unknown = _raw(rt, "c-1"), _raw(rt, "q-1"), _raw(rt, "u-1")
    rt.store.apply(lifecycle.CANCEL, cancelled)  # (its ledger call lost)
    rt.store.apply(
        lifecycle.FAIL_UNKNOWN_OUTCOME,
        unknown,
        error=JobError(code="outcome_unknown", message="lost answer"),
    )
    age()
    # When the reconciler passes
    report = reconcile_stage.reconcile_once(rt, steps)
    # Then only the holds of the job never recorded and of the cancelled job are freed
    assert sorted(report.holds_released) == sorted(["never-recorded", cancelled])
    assert ledger.holds_today() == {queued: 1.6, unknown: 1.6}
    assert ledger.today().reserved == 3.2


def test_a_create_records_its_task_owner_and_settles_once_after_the_scripts_are_flushed(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    """The owner's write and the settle travel together; a server that lost its scripts
    (restart, SCRIPT FLUSH) still gets the settle exactly once, after the owner."""
    rt = make_rt(credit_limit_daily=10.0)
    job_id = _raw(rt, "f-1")
    rt.redis.script_flush()
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    record = rt.store.require(job_id)
    assert record.evolink_task_id is not None
    assert owners_of(rt.store).owner(record.evolink_task_id) == job_id
    day = rt.credits().today()
    assert (day.paid, day.reserved) == (1.6, 0.0)
    assert emulator_server.stats()["charges_by_idempotency_key"] == {f"nbq-{job_id}-1": 1.6}


def test_a_create_without_a_budget_records_its_owner_and_counts_the_charge_as_paid(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    rt = make_rt()
    job_id = _raw(rt, "u-1")
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    record = rt.store.require(job_id)
    assert record.evolink_task_id is not None
    assert owners_of(rt.store).owner(record.evolink_task_id) == job_id
    assert rt.credits().today().paid == 1.6
