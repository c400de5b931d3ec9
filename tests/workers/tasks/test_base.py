"""StageTask: a run that failed its job ends in Celery FAILURE with the reason's class."""

from __future__ import annotations

import pytest
from celery import Celery

from nanobanana_queue.workers.errors import NbqError, ResultExpiredError, ServerError
from nanobanana_queue.workers.stages.steps import Done, Fail, Retry, Step
from nanobanana_queue.workers.tasks.base import StageTask


@pytest.fixture
def eager_app() -> Celery:
    app = Celery("nbq-test", set_as_current=False)
    app.conf.update(task_always_eager=False, task_store_eager_result=False)
    return app


def _stage(*, fail: bool, retries: int = 0, job_id: str) -> Step:
    if fail:
        error = ResultExpiredError("link 403")
        error.failed_job(job_id, error.job_error())  # what the stage's fail() does
        return Fail(error, label="failed_result_expired")
    return Done("stored")


def test_a_run_that_failed_its_job_ends_failure_with_the_reasons_exception(
    eager_app: Celery,
) -> None:
    @eager_app.task(base=StageTask, bind=True, name="t.fail")
    def task(self: StageTask, job_id: str, fail: bool) -> str:
        return self.run_stage(_stage, job_id=job_id, fail=fail)

    result = task.apply(kwargs={"job_id": "j1", "fail": True})
    assert result.state == "FAILURE"
    assert isinstance(result.result, ResultExpiredError)
    assert "job j1 failed (result_expired)" in str(result.result)


def test_a_run_that_did_not_fail_a_job_succeeds_with_its_label(eager_app: Celery) -> None:
    @eager_app.task(base=StageTask, bind=True, name="t.ok")
    def task(self: StageTask, job_id: str, fail: bool) -> str:
        return self.run_stage(_stage, job_id=job_id, fail=fail)

    result = task.apply(kwargs={"job_id": "j2", "fail": False})
    assert (result.state, result.result) == ("SUCCESS", "stored")


def test_job_failures_are_expected_errors_never_autoretried() -> None:
    assert StageTask.throws == (NbqError,)
    assert not getattr(StageTask, "autoretry_for", ())


def test_the_pipeline_tasks_ack_a_failure_instead_of_requeueing_it() -> None:
    from nanobanana_queue.workers.app import app
    from nanobanana_queue.workers.tasks import pipeline

    assert app.conf.task_acks_on_failure_or_timeout is True
    assert app.conf.result_backend is None and app.conf.task_ignore_result is True
    for task in (pipeline.poll_task, pipeline.download_task):
        assert task.acks_late and task.reject_on_worker_lost
        assert getattr(task, "acks_on_failure_or_timeout", True) is True


def test_a_retry_step_retries_the_task_until_its_budget_then_raises_its_cause(
    eager_app: Celery,
) -> None:
    runs: list[int] = []

    def flaky(*, retries: int = 0, job_id: str) -> Step:
        runs.append(retries)
        return Retry(
            error=ServerError("the API kept failing", status_code=503),
            after_s=0.01,
            budget=2,
        )

    @eager_app.task(base=StageTask, bind=True, name="t.retry")
    def task(self: StageTask, job_id: str) -> str:
        return self.run_stage(flaky, job_id=job_id)

    result = task.apply(kwargs={"job_id": "j3"})
    assert runs == [0, 1, 2]  # Celery retries (Flower: RETRY with the cause's class)
    assert result.state == "FAILURE" and isinstance(result.result, ServerError)
