"""The dispatcher: every message step becomes the contract's message, and nothing waits
longer than NBQ_MAX_COUNTDOWN_S."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Retry as CeleryRetry
from celery.signals import before_task_publish

import nanobanana_queue.workers.tasks  # noqa: F401 - registers the nbq.* tasks on the app
from nanobanana_queue.workers.app import app as celery_app
from nanobanana_queue.workers.dispatch import Dispatcher, capped_countdown, envelope
from nanobanana_queue.workers.errors import NbqError, QuotaExceededError, ServerError
from nanobanana_queue.workers.guard.inspect import TASK_PARAMS, Limits, inspect_message
from nanobanana_queue.workers.stages.steps import (
    Adopt,
    Download,
    Generate,
    Message,
    Poll,
    Retry,
    Submit,
)

#: One of each message step, and the message the contract says it is.
CONTRACT: list[tuple[Message, str, dict[str, Any]]] = [
    (
        Generate("alice~j1", {"prompt": "a cat"}, producer="alice", batch_id="b1"),
        "nbq.generate",
        {
            "request": {"prompt": "a cat"},
            "job_id": "alice~j1",
            "producer": "alice",
            "batch_id": "b1",
        },
    ),
    (
        Generate("j1", {"prompt": "a cat"}),
        "nbq.generate",
        {"request": {"prompt": "a cat"}, "job_id": "j1", "producer": None},
    ),
    (Submit("j1", after_s=3.0), "nbq.submit", {"job_id": "j1"}),
    (
        Poll("j1", "tok", after_s=5.0, evolink_task_id="task-1"),
        "nbq.poll",
        {"job_id": "j1", "token": "tok", "evolink_task_id": "task-1"},
    ),
    (Poll("j1", ""), "nbq.poll", {"job_id": "j1", "token": ""}),
    (Download("j1", "task-1"), "nbq.download", {"job_id": "j1", "evolink_task_id": "task-1"}),
    (Download("j1"), "nbq.download", {"job_id": "j1"}),
    (
        Adopt("j1", "task-1", source="person"),
        "nbq.adopt",
        {"job_id": "j1", "task_id": "task-1", "source": "person"},
    ),
]


@pytest.mark.parametrize(("step", "task", "kwargs"), CONTRACT)
def test_each_step_is_the_contracts_message_and_the_guard_accepts_it(
    step: Message, task: str, kwargs: dict[str, Any]
) -> None:
    message = envelope(step)
    assert (message.task, message.kwargs) == (task, kwargs)
    assert set(message.kwargs) <= set(TASK_PARAMS[task][0])
    countdown = capped_countdown(message.after_s, 600)
    wire = celery_app.amqp.as_task_v2(
        "0f" * 16, task, args=(), kwargs=message.kwargs, countdown=countdown
    )
    refusal = inspect_message(
        headers=wire.headers,
        body=json.dumps(wire.body),
        content_type="application/json",
        content_encoding="utf-8",
        now=time.time(),
        limits=Limits(max_message_bytes=512 * 1024, max_countdown_s=600),
    )
    assert refusal is None


def test_countdowns_are_capped_and_none_means_now() -> None:
    assert capped_countdown(0.0, 600) is None
    assert capped_countdown(None, 600) is None
    assert capped_countdown(30.0, 600) == 30.0
    assert capped_countdown(7200.0, 600) == 600


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """What a real Celery app publishes (memory transport), as its headers say."""
    seen: list[dict[str, Any]] = []

    def record(sender: str, headers: dict[str, Any], body: Any, **_: Any) -> None:
        seen.append({"task": sender, "eta": headers.get("eta"), "kwargs": body[1]})

    before_task_publish.connect(record, weak=False)
    yield seen
    before_task_publish.disconnect(record)


def test_send_publishes_one_message_with_its_countdown_capped(
    published: list[dict[str, Any]],
) -> None:
    app = Celery("dispatch-test", broker="memory://", set_as_current=False)
    dispatcher = Dispatcher(app, max_countdown_s=10.0)
    dispatcher.send(Poll("j1", "tok", after_s=3600.0, evolink_task_id="task-1"))
    dispatcher.send(Download("j1"))
    assert [m["task"] for m in published] == ["nbq.poll", "nbq.download"]
    assert published[0]["kwargs"] == {"job_id": "j1", "token": "tok", "evolink_task_id": "task-1"}
    eta = datetime.fromisoformat(published[0]["eta"]).timestamp()
    assert 0 < eta - time.time() <= 10.0
    assert published[1]["eta"] is None


@pytest.mark.parametrize(
    ("error", "spends_budget", "sent_retries"),
    [
        (ServerError("503", status_code=503), True, 4),  # one more transient retry
        (QuotaExceededError("402", status_code=402), False, 0),  # a wait: the budget is whole
    ],
)
def test_a_retry_resends_the_running_message_and_only_a_spending_one_counts(
    error: NbqError, spends_budget: bool, sent_retries: int
) -> None:
    # Given a run that is its message's third retry (max_retries None as StageTask)
    app = Celery("dispatch-retry-test", broker="memory://", set_as_current=False)

    @app.task(bind=True, name="t.dispatch-retry", max_retries=None, shared=False)
    def poll(self: Any, **_: Any) -> None: ...

    seen: list[dict[str, Any]] = []

    def record(sender: str, headers: dict[str, Any], body: Any, **_: Any) -> None:
        seen.append({"task": sender, "id": headers["id"], "retries": headers["retries"],
                     "eta": headers.get("eta"), "kwargs": body[1]})  # fmt: skip

    before_task_publish.connect(record, weak=False)
    poll.push_request(
        id="c-1", retries=3, kwargs={"job_id": "j1", "token": "t1"}, called_directly=False
    )
    try:
        # When the stage asks for a retry
        step = Retry(error, after_s=30.0, budget=None, spends_budget=spends_budget)
        raised = Dispatcher(app, max_countdown_s=10.0).retry(poll, step)
    finally:
        poll.pop_request()
        before_task_publish.disconnect(record)
    # Then the same task id goes out once, capped, with its retries counted or reset
    assert [(m["task"], m["id"], m["retries"], m["kwargs"]) for m in seen] == [
        ("t.dispatch-retry", "c-1", sent_retries, {"job_id": "j1", "token": "t1"})
    ]
    assert 0 < datetime.fromisoformat(seen[0]["eta"]).timestamp() - time.time() <= 10.0
    # And the worker raises Celery's Retry carrying the error (Flower: RETRY, its class)
    assert isinstance(raised, CeleryRetry) and raised.exc is error and raised.when == 10.0
