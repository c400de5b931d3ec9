"""Every API status and task error code maps to exactly one action."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.errors import (
    NotAnImageError,
    ResultFetchError,
    StorageError,
    UnsafeUrlError,
)
from nanobanana_queue.workers.evolink.errors import (
    PERMANENT_TASK_CODES,
    RETRYABLE_TASK_CODES,
    ApiConnectionError,
    ApiTimeoutError,
    MalformedResponseError,
    TaskFailedError,
    error_for_status,
)
from nanobanana_queue.workers.policy.errors import STATUS_ACTIONS, Action, action_for


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (400, Action.FAIL),
        (401, Action.STOP_AND_ALERT),
        (402, Action.PAUSE_SUBMISSIONS),
        (403, Action.FAIL),
        (404, Action.FAIL),
        (413, Action.FAIL),
        (429, Action.RETRY),
        (500, Action.RETRY),
        (502, Action.RETRY),
        (503, Action.RETRY),
        (504, Action.RETRY),
    ],
)
def test_each_http_status_maps_to_its_action(status: int, action: Action) -> None:
    error = error_for_status(status)("x", status_code=status)
    assert action_for(error) is action
    assert STATUS_ACTIONS[status] is action


@pytest.mark.parametrize("code", sorted(RETRYABLE_TASK_CODES))
def test_retryable_task_codes_ask_for_a_fresh_task(code: str) -> None:
    assert action_for(TaskFailedError(code, "")) is Action.RECREATE


@pytest.mark.parametrize("code", sorted(PERMANENT_TASK_CODES))
def test_permanent_task_codes_fail_the_job(code: str) -> None:
    assert action_for(TaskFailedError(code, "")) is Action.FAIL


def test_an_unknown_task_code_is_retried_with_a_fresh_task() -> None:
    assert action_for(TaskFailedError("brand_new_code", "")) is Action.RECREATE


def test_a_create_whose_request_may_have_been_sent_has_an_unknown_outcome() -> None:
    sent = ApiTimeoutError("read timeout", create_may_have_happened=True)
    assert action_for(sent, during_create=True) is Action.OUTCOME_UNKNOWN
    assert action_for(sent, during_create=False) is Action.RETRY
    not_sent = ApiConnectionError("refused", create_may_have_happened=False)
    assert action_for(not_sent, during_create=True) is Action.RETRY


def test_a_garbled_success_answer_is_never_a_reason_to_fail() -> None:
    garbled = MalformedResponseError("bad json", status_code=200)
    assert action_for(garbled, during_create=True) is Action.OUTCOME_UNKNOWN
    assert action_for(garbled) is Action.RETRY


def test_pipeline_errors_follow_their_retryable_flag() -> None:
    assert action_for(ResultFetchError("x")) is Action.RETRY
    assert action_for(StorageError("x")) is Action.RETRY
    assert action_for(NotAnImageError("x")) is Action.FAIL
    assert action_for(UnsafeUrlError("x")) is Action.FAIL
