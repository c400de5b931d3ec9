"""The guard's check (workers/guard/inspect.py): ours pass, hostile shapes are refused."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nanobanana_queue.workers.tasks  # noqa: F401 - registers the nbq.* tasks on the app
from nanobanana_queue.workers.app import app as celery_app
from nanobanana_queue.workers.guard.inspect import REASONS, Limits, inspect_message

LIMITS = Limits(max_message_bytes=512 * 1024, max_countdown_s=600)


def ours(name: str, kwargs: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A message exactly as our own send_task builds it (Celery protocol 2)."""
    msg = celery_app.amqp.as_task_v2("0f" * 16, name, args=(), kwargs=kwargs, **options)
    return {
        "headers": msg.headers,
        "body": json.dumps(msg.body),
        "content_type": "application/json",
        "content_encoding": "utf-8",
    }


def check(message: dict[str, Any], now: float | None = None) -> Any:
    return inspect_message(**message, now=time.time() if now is None else now, limits=LIMITS)


@pytest.mark.parametrize(
    ("name", "kwargs", "countdown"),
    [
        ("nbq.generate", {"request": {"prompt": "a cat"}}, None),
        (
            "nbq.generate",
            {
                "request": {"prompt": "a", "size": "16:9"},
                "job_id": "o-1",
                "producer": "alice",
                "batch_id": "b1",
            },
            None,
        ),
        ("nbq.submit", {"job_id": "abc"}, 300.0),  # the longest quota hop
        ("nbq.poll", {"job_id": "abc", "token": "0123456789abcdef"}, 120.0),  # first hop
        ("nbq.poll", {"job_id": "abc", "token": "t"}, 600.0),  # the clamp itself
        ("nbq.download", {"job_id": "abc"}, 60.0),
        ("nbq.poll", {"job_id": "abc", "token": "t", "evolink_task_id": "task-unified-1-a"}, 5.0),
        ("nbq.download", {"job_id": "abc", "evolink_task_id": "task-unified-1-a"}, None),
        ("nbq.adopt", {"job_id": "abc", "task_id": "task-unified-1-abc"}, None),
        ("nbq.adopt", {"job_id": "abc", "task_id": "task-x", "source": "person"}, None),
        ("nbq.reconcile", {}, None),
    ],
)
def test_every_message_we_send_ourselves_passes(
    name: str, kwargs: dict[str, Any], countdown: float | None
) -> None:
    assert check(ours(name, kwargs, countdown=countdown)) is None


def test_every_task_the_workers_register_has_a_contract_in_the_guard() -> None:
    # A task of ours the guard does not know would be dead-lettered as unknown_task.
    from nanobanana_queue.workers.guard.inspect import TASK_PARAMS

    ours_registered = {name for name in celery_app.tasks if name.startswith("nbq.")}
    assert ours_registered == set(TASK_PARAMS)


def test_an_eta_just_beyond_the_horizon_is_refused_and_one_inside_passes() -> None:
    message = ours("nbq.poll", {"job_id": "a", "token": "t"}, countdown=600.0)
    assert check(message) is None
    refusal = check(message, now=time.time() - 120)  # as if it were 720 s ahead
    assert refusal is not None and refusal.reason == "eta_beyond_horizon"


def test_an_expired_message_is_refused() -> None:
    message = ours("nbq.submit", {"job_id": "a"}, expires=1.0)
    refusal = check(message, now=time.time() + 5)
    assert refusal is not None and refusal.reason == "expired"


@pytest.mark.parametrize("name", ["id", "root_id", "parent_id", "argsrepr"])
def test_a_header_celery_logs_may_not_carry_terminal_escapes(name: str) -> None:
    # Celery's own log lines ("Task nbq.poll[<id>] received") print these as they are
    message = ours("nbq.poll", {"job_id": "a", "token": "t"})
    message["headers"][name] = "0f\x1b]0;PWNED\x07\x1b[2J"
    refusal = check(message)
    assert refusal is not None and refusal.reason == "bad_header" and name in refusal.detail


def test_positional_arguments_are_bound_to_the_task_parameters() -> None:
    message = ours("nbq.poll", {})
    message["body"] = json.dumps([["job-1", "tok"], {}, {}])
    assert check(message) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
HEADER_KEYS = st.sampled_from(
    [
        "id",
        "task",
        "eta",
        "expires",
        "retries",
        "timelimit",
        "root_id",
        "shadow",
        "group",
        "ignore_result",
        "stamps",
        "argsrepr",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.one_of(JSON, st.dictionaries(HEADER_KEYS, JSON, max_size=8)),
    body=st.one_of(JSON.map(json.dumps), st.binary(max_size=64), st.text(max_size=64)),
    task=st.sampled_from(["nbq.generate", "nbq.submit", "nbq.poll", "nbq.download", "x"]),
    content_type=st.sampled_from(["application/json", "text/plain", None]),
)
def test_the_check_never_raises_on_arbitrary_bodies_and_headers(
    headers: Any, body: Any, task: str, content_type: str | None
) -> None:
    if isinstance(headers, dict) and "task" not in headers:
        headers = {**headers, "task": task}
    refusal = inspect_message(
        headers=headers,
        body=body,
        content_type=content_type,
        content_encoding="utf-8",
        now=time.time(),
        limits=LIMITS,
    )
    assert refusal is None or refusal.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(
    header_overrides=st.dictionaries(HEADER_KEYS.filter(lambda k: k != "task"), JSON, max_size=4),
    kwargs=st.dictionaries(st.sampled_from(["job_id", "token", "x"]), JSON, max_size=3),
)
def test_whatever_passes_the_check_celery_can_build_a_request_from(
    header_overrides: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    from celery.worker.request import Request
    from kombu.message import Message

    message = ours("nbq.poll", {"job_id": "a", "token": "t"})
    message["headers"] = {**message["headers"], **header_overrides}
    message["body"] = json.dumps([[], kwargs, {}])
    if check(message) is not None:
        return
    kombu_message = Message(
        body=message["body"],
        headers=message["headers"],
        content_type="application/json",
        content_encoding="utf-8",
        accept=["application/json"],
    )
    request = Request(kombu_message, app=celery_app, task=celery_app.tasks["nbq.poll"])
    assert request.name == "nbq.poll"
