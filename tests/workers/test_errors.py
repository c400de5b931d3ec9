"""The one error module: one class per failure reason, each with its code, whether another
try can help, how its task retries it and what a person should do."""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path

import pytest

from nanobanana_queue.workers import errors
from nanobanana_queue.workers.errors import (
    BACKOFF,
    BREAKER_WAIT,
    FAILURE_CLASSES,
    KEY_RECHECK,
    KEY_RECHECK_S,
    MAX_QUOTA_WAIT_S,
    PERMANENT_TASK_CODES,
    RETRYABLE_TASK_CODES,
    STORE_WAIT,
    ApiConnectionError,
    ApiTimeoutError,
    ContentPolicyViolationError,
    MalformedResponseError,
    NbqError,
    NotAnImageError,
    ResultExpiredError,
    ResultFetchError,
    StorageError,
    TaskFailedError,
    UnsafeUrlError,
    error_for_status,
)
from nanobanana_queue.workers.jobs.record import JobError
from nanobanana_queue.workers.policy.schedule import Backoff
from nanobanana_queue.workers.stages.submit import _outcome_unknown

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = Backoff(base_s=1.0, max_s=60.0)


@pytest.mark.parametrize(
    ("status", "rule"),
    [
        (400, None),
        (401, KEY_RECHECK),
        (402, BREAKER_WAIT),
        (403, None),
        (404, None),
        (413, None),
        (418, None),
        (429, BACKOFF),
        (500, BACKOFF),
        (502, BACKOFF),
        (503, BACKOFF),
        (504, BACKOFF),
        (599, BACKOFF),
    ],
)
def test_each_http_status_has_a_class_whose_rule_says_fail_wait_or_back_off(
    status: int, rule: errors.RetryRule | None
) -> None:
    assert error_for_status(status)("x", status_code=status).retry_rule is rule


@pytest.mark.parametrize("code", sorted(RETRYABLE_TASK_CODES | {"brand_new_code"}))
def test_retryable_and_unknown_task_codes_ask_for_a_fresh_task(code: str) -> None:
    failed = TaskFailedError.of(code, "")
    assert failed.recreates and failed.retryable and failed.reason == code


@pytest.mark.parametrize("code", sorted(PERMANENT_TASK_CODES))
def test_permanent_task_codes_fail_the_job_with_their_own_code(code: str) -> None:
    failed = TaskFailedError.of(code, "")
    assert not failed.recreates and not failed.retryable
    assert failed.job_error().code == code
    assert isinstance(failed, ContentPolicyViolationError) == (code == "content_policy_violation")


def test_a_create_whose_request_may_have_been_sent_has_an_unknown_outcome() -> None:
    assert _outcome_unknown(ApiTimeoutError("read timeout", create_may_have_happened=True))
    assert not _outcome_unknown(ApiConnectionError("refused", create_may_have_happened=False))
    # A garbled 2xx: the call worked (a create made its task), its answer was lost.
    garbled = MalformedResponseError("bad json", status_code=200)
    assert _outcome_unknown(garbled) and garbled.retry_rule is BACKOFF


def test_result_and_storage_errors_back_off_only_when_another_fetch_can_help() -> None:
    assert ResultFetchError("x").retry_rule is BACKOFF
    assert StorageError("x").retry_rule is BACKOFF
    assert NotAnImageError("x").retry_rule is None
    assert UnsafeUrlError("x").retry_rule is None


def test_waits_for_the_breaker_or_a_key_are_unbounded_and_keep_the_transient_budget() -> None:
    for rule in (BREAKER_WAIT, KEY_RECHECK):
        assert rule.budget(transient_retries=5) is None and not rule.spends_budget
    rng = random.Random(1)
    assert BREAKER_WAIT.delay_s(attempt=0, backoff=SCHEDULE, rng=rng, wait_s=0.0) == 1.0
    assert BREAKER_WAIT.delay_s(attempt=0, backoff=SCHEDULE, rng=rng, wait_s=42.0) == 42.0
    assert BREAKER_WAIT.delay_s(attempt=0, backoff=SCHEDULE, rng=rng, wait_s=86400) == (
        MAX_QUOTA_WAIT_S
    )
    assert KEY_RECHECK.delay_s(attempt=9, backoff=SCHEDULE, rng=rng) == KEY_RECHECK_S


def test_backoff_stays_within_the_transient_budget_and_honours_retry_after() -> None:
    assert BACKOFF.budget(transient_retries=5) == 5 and BACKOFF.spends_budget
    rng = random.Random(2)
    for attempt in range(8):
        ceiling = min(60.0, 2**attempt)
        assert ceiling / 2 <= BACKOFF.delay_s(attempt=attempt, backoff=SCHEDULE, rng=rng) <= ceiling
    assert BACKOFF.delay_s(attempt=0, backoff=SCHEDULE, rng=rng, wait_s=30.0) == 30.0


def test_a_store_outage_is_waited_out_without_bound() -> None:
    assert STORE_WAIT.budget(transient_retries=5) is None and STORE_WAIT.spends_budget


def test_every_failure_reason_has_exactly_one_class_and_says_what_to_do() -> None:
    reasons = [cls.reason for cls in FAILURE_CLASSES]
    assert len(reasons) == len(set(reasons))
    for cls in FAILURE_CLASSES:
        assert issubclass(cls, NbqError)
        assert cls.hint and cls.hint != NbqError.hint, cls


def test_the_failed_jobs_message_names_job_reason_and_what_a_person_can_do() -> None:
    exc = TaskFailedError.of("content_policy_violation", "prompt refused")
    exc.failed_job("job-1", exc.job_error())
    text = str(exc)
    assert text.startswith("job job-1 failed (content_policy_violation): task failed:")
    assert "What to do: " in text and "rephrase" in text
    assert (exc.job_id, exc.reason) == ("job-1", "content_policy_violation")


def test_a_long_error_message_is_quoted_only_in_part() -> None:
    exc = ResultExpiredError("x" * 5000)
    exc.failed_job("j", exc.job_error())
    assert len(str(exc)) < errors.MAX_MESSAGE_CHARS + 300 and "xxx..." in str(exc)
    assert len(exc.job_error().message) == 1000  # the record keeps more


def test_errors_pickle_with_their_fields_and_repr_on_one_line() -> None:
    exc = NotAnImageError("HTML body")
    exc.failed_job("job-2", JobError(code="not_an_image", message="HTML body"))
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is NotAnImageError
    assert (str(back), back.job_id, back.reason) == (str(exc), "job-2", "not_an_image")
    assert "\n" not in repr(exc) and repr(exc).startswith("NotAnImageError(")
    # What Celery puts in a task-failed event (JSON): the repr, a plain string
    assert json.loads(json.dumps({"exception": repr(exc)}))["exception"] == repr(exc)
    timeout = ApiTimeoutError("read", create_may_have_happened=True)
    assert pickle.loads(pickle.dumps(timeout)).create_may_have_happened


def test_the_docs_list_every_failure_reason_with_its_class_and_retryability() -> None:
    """docs/failure-handling.md's "Failure reasons" table restates FAILURE_CLASSES."""
    text = (ROOT / "docs" / "failure-handling.md").read_text()
    rows = {
        m["reason"]: (m["cls"], m["retryable"], m["rule"])
        for m in re.finditer(
            r"^\| `(?P<reason>[a-z_]+)` \| `(?P<cls>\w+)` \| (?P<retryable>yes|no|per code) \| "
            r"(?P<rule>[a-z_]+|—) \|",
            text,
            re.MULTILINE,
        )
    }
    expected = {
        cls.reason: (
            cls.__name__,
            "yes" if cls.retryable else "no",
            cls.retry_rule.name if cls.retry_rule else "—",
        )
        for cls in FAILURE_CLASSES
    }
    expected["generation_failed"] = ("TaskFailedError", "per code", "—")  # the task's code
    assert rows == expected


def test_the_docs_status_table_says_what_each_status_class_does() -> None:
    """docs/failure-handling.md's "HTTP status" table restates the classes' rules."""
    text = (ROOT / "docs" / "failure-handling.md").read_text()
    text = text[text.index("HTTP status of a create or a query:") : text.index("Task error codes")]
    doc_action = {"fail": None, "retry": BACKOFF, "stop_and_alert": KEY_RECHECK}
    doc_action["pause_submissions"] = BREAKER_WAIT
    rows = re.findall(r"^\| ([0-9, ]+?)(?:, other 5xx)? \| (\w+)", text, re.MULTILINE)
    statuses = {int(s): action for found, action in rows for s in found.split(", ")}
    assert set(statuses) >= {400, 401, 402, 403, 404, 413, 429, 500, 502, 503, 504}
    for status, action in statuses.items():
        assert error_for_status(status)("x").retry_rule is doc_action[action], status
