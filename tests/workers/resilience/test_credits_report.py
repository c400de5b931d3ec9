"""The credits report: what failed and cancelled jobs hold, unknown creates, "unlimited"."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.support.redis_server import RedisServer
from workers.jobs.record import JobError, JobRecord
from workers.jobs.state import JobState
from workers.resilience.credits import CreditLedger
from workers.runtime import Runtime, reset_runtime
from workers.settings import Settings, get_settings
from workers.stages.cancel import cancel_job
from workers.stages.common import fail_job


def test_credits_of_jobs_that_end_failed_or_cancelled_are_reported_apart(
    redis_server: RedisServer,
) -> None:
    rt = Runtime.from_settings(Settings(broker_url=redis_server.url))
    for job_id in ("f", "c", "free"):
        rt.store.create(
            JobRecord(
                job_id=job_id,
                state=JobState.GENERATING,
                credits_reserved=0 if job_id == "free" else 2.5,
            )
        )
    fail_job(rt, "f", JobError(code="content_policy_violation", message="no"))
    fail_job(rt, "free", JobError(code="invalid_request", message="no"))
    cancel_job(rt.store, "c")
    CreditLedger(rt.redis).record_unknown()

    assert CreditLedger(rt.redis).ended_today() == {
        "failed": 2.5,
        "cancelled": 2.5,
        "unknown_creates": 1.0,
    }


@pytest.mark.parametrize("limit", ["0", "25"])
def test_nbq_credits_shows_an_unset_budget_as_unlimited(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    from producers.cli.main import app

    monkeypatch.setenv("NBQ_BROKER_URL", redis_server.url)
    monkeypatch.setenv("NBQ_CREDIT_LIMIT_DAILY", limit)
    get_settings.cache_clear()
    reset_runtime()
    try:
        CreditLedger(redis_server.client()).record(1.6)
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
    assert data["spent_today"] == pytest.approx(1.6)
    assert {"reserved_by_failed_jobs", "reserved_by_cancelled_jobs"} <= set(data)
