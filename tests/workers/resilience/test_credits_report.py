"""The credits report: paid and reserved apart, what failed and cancelled jobs paid
(each job once), unknown creates, "unlimited"."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nanobanana_queue.workers.errors import InvalidRequestError, TaskFailedError
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.resilience.credits import CreditLedger
from nanobanana_queue.workers.runtime import Runtime, reset_runtime
from nanobanana_queue.workers.settings import Settings, get_settings
from nanobanana_queue.workers.stages.cancel import cancel_job
from nanobanana_queue.workers.stages.common import fail_job
from tests.support.records import seed
from tests.support.redis_server import RedisServer


def test_credits_of_jobs_that_end_failed_or_cancelled_are_reported_apart(
    redis_server: RedisServer,
) -> None:
    rt = Runtime.from_settings(Settings(broker_url=redis_server.url))
    for job_id in ("f", "c", "free"):
        seed(
            rt.store,
            JobRecord(
                job_id=job_id,
                state=JobState.GENERATING,
                credits_paid=0 if job_id == "free" else 2.5,
            ),
        )
    fail_job(rt, "f", TaskFailedError.of("content_policy_violation", "no"))
    fail_job(rt, "free", InvalidRequestError("no"))
    cancel_job(rt.store, "c")
    CreditLedger(rt.redis).record_unknown()

    day = CreditLedger(rt.redis).today()
    assert (day.failed, day.cancelled, day.unknown_creates) == (2.5, 2.5, 1)


def test_a_job_retried_after_a_failure_is_counted_once_per_paid_create(
    redis_server: RedisServer,
) -> None:
    # Given a job that paid 1.6, failed, was retried, paid 1.6 again and failed again
    rt = Runtime.from_settings(Settings(broker_url=redis_server.url))
    seed(rt.store, JobRecord(job_id="twice", state=JobState.GENERATING, credits_paid=1.6))
    fail_job(rt, "twice", TaskFailedError.of("generation_failed", "no"))
    seed(rt.store, JobRecord(job_id="other", state=JobState.GENERATING, credits_paid=0.0))
    # (the retry and the second create, as the record shows them afterwards)
    rt.redis.hset(rt.store.key("twice"), mapping={"state": "generating", "credits_paid": "3.2"})
    fail_job(rt, "twice", TaskFailedError.of("generation_failed", "no"))
    # Then the report says 3.2, not 1.6 + 3.2 (the running total added again)
    assert CreditLedger(rt.redis).today().failed == 3.2


@pytest.mark.parametrize("limit", ["0", "25"])
def test_nbq_credits_shows_an_unset_budget_as_unlimited(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    from nanobanana_queue.producers.cli.main import app

    monkeypatch.setenv("NBQ_BROKER_URL", redis_server.url)
    monkeypatch.setenv("NBQ_CREDIT_LIMIT_DAILY", limit)
    get_settings.cache_clear()
    reset_runtime()
    try:
        CreditLedger(redis_server.client()).settle("j", 1.6, producer="p", held_on=None)
        shown = CliRunner().invoke(app, ["credits"], env={"COLUMNS": "200"})
        data = json.loads(CliRunner().invoke(app, ["credits", "--json"]).stdout)
    finally:
        get_settings.cache_clear()
        reset_runtime()
    assert shown.exit_code == 0, shown.output
    if limit == "0":
        assert "unlimited" in shown.stdout.split("per producer")[0]
        assert data["daily_limit"] is None and data["unlimited"] is True
    else:
        assert "25 (NBQ_CREDIT_LIMIT_DAILY)" in shown.stdout
        assert data["daily_limit"] == 25 and data["unlimited"] is False
    assert data["spent_today"] == data["paid_today"] == 1.6 and data["reserved_today"] == 0
    assert data["producers"] == {"p": {"paid": 1.6, "reserved": 0.0}}
    assert {"paid_by_failed_jobs", "paid_by_cancelled_jobs"} <= set(data)


def test_the_live_line_counts_paid_creates_not_402_refused_calls() -> None:
    from nanobanana_queue.producers.cli.live import status_line

    # A job that waited through a 402 wait: nine refused calls, then one paid create
    waiting = JobRecord(job_id="j", state=JobState.QUEUED, attempts=10, paid_creates=1)
    assert "creates" not in status_line(waiting, 1.0).plain
    recreated = JobRecord(job_id="j", state=JobState.GENERATING, attempts=3, paid_creates=2)
    assert "paid creates 2" in status_line(recreated, 1.0).plain
