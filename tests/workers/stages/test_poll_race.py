"""Two polls of one job racing (a countdown poll and a callback's poll): only the live
chain's answer may move the job, so a failed task is recreated once, never twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nanobanana_queue.workers.evolink.models import Task
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages.poll import poll
from nanobanana_queue.workers.stages.submit import submit
from tests.support.redis_server import RedisServer
from tests.workers.stages.conftest import StepLog


@dataclass
class RacingApi:
    """Answers ``failed service_error``; during the first query a second poll runs, which
    recreates the task, and the submit stage creates ``task-2`` — all before the first
    query's (stale) answer arrives."""

    rt: Runtime
    steps: StepLog
    job_id: str
    outcomes: list[str] = field(default_factory=list)

    def get_task(self, task_id: str) -> Task:
        if not self.outcomes:
            self.outcomes.append("racing")
            current = self.rt.store.require(self.job_id).poll_token or ""
            self.outcomes.append(self.steps(poll(self.rt, self.job_id, current)))
            self.outcomes.append(self.steps(submit(self.rt, self.job_id)))
        return Task.model_validate(
            {
                "id": task_id,
                "status": "failed",
                "error": {"code": "service_error", "message": "upstream hiccup"},
            }
        )

    def create_task(self, request: Any, **_: Any) -> Task:
        return Task.model_validate(
            {"id": "task-2", "status": "pending", "task_info": {"estimated_time": 10}}
        )


def test_a_slower_poll_answer_for_the_same_task_does_not_recreate_twice(
    redis_server: RedisServer,
) -> None:
    # Given a generating job whose task failed with a retryable code
    rt = Runtime.from_settings(Settings(broker_url=redis_server.url))
    steps = StepLog()
    rt.store.create(JobRecord(job_id="race-1", request={"prompt": "race"}))
    rt.store.apply(lifecycle.CLAIM_SUBMIT, "race-1")
    rt.store.apply(lifecycle.TASK_CREATED, "race-1", evolink_task_id="task-1", poll_token="T0")
    api = RacingApi(rt, steps, "race-1")
    rt._api = api  # type: ignore[assignment]
    # When the countdown poll (token T0) is overtaken by a second poll during its query
    first: Any = steps(poll(rt, "race-1", "T0"))
    # Then the overtaking poll recreated the task (task-2 now runs), and the slower
    # answer about task-1 changed nothing: no second recreate, task-2 kept
    assert api.outcomes[1:] == ["recreate", "created"]
    assert first == "stale_on_fail"
    record = rt.store.require("race-1")
    assert record.state is JobState.GENERATING and record.evolink_task_id == "task-2"
    assert record.create_seq == 2 and record.previous_task_ids == ["task-1"]
    assert [c for c in steps.calls if c[0] == "submit"] == [("submit", "race-1")]
