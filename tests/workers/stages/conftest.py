"""Stage functions on real parts without Celery: a test-owned Redis, the emulator, and S3.

Stages return their next step instead of sending it; ``StepLog`` records those steps,
so a test drives the pipeline by hand, one stage call at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages import reconcile as reconcile_stage
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.intake import intake
from nanobanana_queue.workers.stages.steps import Adopt, Download, Poll, Step, Submit
from tests.support import records
from tests.support.emulator_server import EmulatorServer
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server


@dataclass
class StepLog:
    """Every step the stages returned, in order. Calling it with a step records the step
    and answers its label: ``steps(submit(rt, job_id)) == "created"``; it is also the
    ``send`` the reconciler and the callback receiver dispatch through."""

    steps: list[Step] = field(default_factory=list)

    def __call__(self, step: Step) -> str:
        self.steps.append(step)
        return step.label

    @property
    def calls(self) -> list[tuple[Any, ...]]:
        """The messages asked for: ``("poll", job_id, token)``, ``("submit", job_id)`` …"""
        calls: list[tuple[Any, ...]] = []
        for step in self.steps:
            if isinstance(step, Submit):
                calls.append(("submit", step.job_id))
            elif isinstance(step, Poll):
                calls.append(("poll", step.job_id, step.token))
            elif isinstance(step, Download):
                calls.append(("download", step.job_id))
            elif isinstance(step, Adopt):
                calls.append(("adopt", step.job_id, step.task_id, step.source))
        return calls

    @property
    def task_ids(self) -> dict[str, str | None]:
        """The Evolink task id each poll/download message carried, by job id."""
        return {
            step.job_id: step.evolink_task_id
            for step in self.steps
            if isinstance(step, Poll | Download)
        }

    def last(self, kind: str) -> tuple[Any, ...]:
        return next(c for c in reversed(self.calls) if c[0] == kind)


@pytest.fixture
def steps() -> StepLog:
    return StepLog()


@pytest.fixture
def make_rt(
    redis_server: RedisServer, emulator_server: EmulatorServer, s3_server: S3Server
) -> Iterator[Callable[..., Runtime]]:
    """``make_rt(**settings)``: a Runtime on this test's Redis, emulator and S3."""
    made: list[Runtime] = []

    def make(**overrides: Any) -> Runtime:
        values: dict[str, Any] = {
            "broker_url": redis_server.url,
            "evolink_base_url": emulator_server.url,
            "evolink_api_key": emulator_server.api_key,
            "result_url_private_hosts": ["127.0.0.1"],
            "result_url_allow_http": True,
            "s3_endpoint": s3_server.endpoint,
            "s3_access_key": s3_server.access_key,
            "s3_secret_key": s3_server.secret_key,
            "s3_bucket": s3_server.bucket,
            "poll_min_interval_s": 0.05,
            "poll_max_interval_s": 0.5,
            "default_estimated_time_s": 0.3,
            "retry_backoff_base_s": 0.05,
            "retry_backoff_max_s": 0.5,
            "stuck_after_s": 0.2,
            # A download's own read timeout: ample on a loaded machine (0.1 s failed there);
            # the reconciler tests pass FAST_REDOWNLOAD for its downloading threshold.
            "download_timeout_s": 10.0,
            **overrides,
        }
        rt = Runtime.from_settings(Settings(**values))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.redis.close()


#: The reconciler re-drives a download idle ``max(stuck_after_s, 1.5 × download_timeout_s)``:
#: with these, after ``age()``.
FAST_REDOWNLOAD = {"download_timeout_s": 0.1}


@pytest.fixture
def rt(make_rt: Callable[..., Runtime]) -> Runtime:
    return make_rt()


def new_job(rt: Runtime, prompt: str = "stage test") -> str:
    record = intake(rt, request={"prompt": prompt, "quality": "1K"}, job_id=None)
    assert record is not None and record.state is JobState.QUEUED
    return record.job_id


def submitted_job(rt: Runtime, steps: StepLog, prompt: str = "stage test") -> JobRecord:
    """A job through submit: generating, with one API task and a scheduled poll."""
    job_id = new_job(rt, prompt)
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    record = rt.store.require(job_id)
    assert record.state is JobState.GENERATING and record.evolink_task_id
    return record


def wait_task_final(emulator: EmulatorServer, task_id: str) -> None:
    """Until the emulator's task ended (time scale 0.01: a fraction of a second)."""
    deadline = time.monotonic() + 30
    while emulator.task(task_id)["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, f"task {task_id} never ended"
        time.sleep(0.02)


def age(seconds: float = 0.3) -> None:
    """Let records idle past ``stuck_after_s`` (0.2 s); no assertion depends on the time."""
    time.sleep(seconds)


def set_fields(rt: Runtime, job_id: str, **fields: Any) -> None:
    """Change a record's fields as a test's Given (e.g. a poll due long ago): written
    directly, not a transition (the stages write only the table's)."""
    records.set_fields(rt.store, job_id, **fields)


def claim_submit(rt: Runtime, job_id: str) -> JobRecord:
    """The submit's claim as a worker makes it before its create leaves."""
    claimed, won = rt.store.apply(lifecycle.CLAIM_SUBMIT, job_id)
    assert won and claimed is not None
    return claimed


@pytest.fixture
def short_submit_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """Submits live at most 0.2 s (their real time limit is 90 s): lets the reconciler
    recover a claim of a dead worker after ``age()``."""
    monkeypatch.setattr(reconcile_stage, "submit_time_limit_s", lambda _settings: 0.2)
