"""The failure hierarchy: one class per reason, safe to pickle, show and log."""

from __future__ import annotations

import json
import pickle

import pytest

from nanobanana_queue.workers import failures
from nanobanana_queue.workers.evolink.errors import PERMANENT_TASK_CODES
from nanobanana_queue.workers.jobs.record import JobError

#: The failure reasons docs/job-states.md and docs/failure-handling.md list.
DOCUMENTED_REASONS = {
    "invalid_request": "InvalidRequest",
    "request_too_large": "RequestTooLarge",
    "content_policy_violation": "ContentPolicyViolation",
    "task_not_found": "TaskNotFound",
    "model_access_denied": "ModelAccessDenied",
    "deadline_exceeded": "DeadlineExceeded",
    "outcome_unknown": "OutcomeUnknown",
    "api_unavailable": "ApiUnavailable",
    "result_expired": "ResultExpired",
    "not_an_image": "ResultNotAnImage",
    "result_too_large": "ResultTooLarge",
    "unsafe_result_url": "UnsafeResultUrl",
    "download_failed": "DownloadFailed",
    "storage_unavailable": "StorageUnavailable",
}


@pytest.mark.parametrize(("code", "name"), sorted(DOCUMENTED_REASONS.items()))
def test_every_documented_reason_has_its_own_class_under_job_failed(code: str, name: str) -> None:
    cls = failures.failure_class(code)
    assert cls.__name__ == name
    assert issubclass(cls, failures.JobFailed)
    assert cls.reason == code


def test_other_task_codes_are_generation_failures_and_unknown_codes_plain_job_failed() -> None:
    for code in PERMANENT_TASK_CODES - {"content_policy_violation"}:
        assert failures.failure_class(code) is failures.GenerationFailed
    assert failures.failure_class("generation_timeout") is failures.GenerationFailed
    assert failures.failure_class("something_new") is failures.JobFailed


def test_the_message_names_job_reason_and_what_a_person_can_do() -> None:
    exc = failures.failure_for(
        "job-1", JobError(code="content_policy_violation", message="prompt refused")
    )
    text = str(exc)
    assert text.startswith("job job-1 failed (content_policy_violation): prompt refused.")
    assert "What to do: " in text and "rephrase" in text
    assert (exc.job_id, exc.code) == ("job-1", "content_policy_violation")


def test_a_long_error_message_is_quoted_only_in_part() -> None:
    exc = failures.failure_for("j", JobError(code="invalid_request", message="x" * 5000))
    assert len(str(exc)) < failures.MAX_MESSAGE_CHARS + 300
    assert "xxx..." in str(exc)


def test_exceptions_pickle_with_their_fields_and_repr_on_one_line() -> None:
    exc = failures.failure_for("job-2", JobError(code="not_an_image", message="HTML body"))
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is failures.ResultNotAnImage
    assert (str(back), back.job_id, back.code) == (str(exc), "job-2", "not_an_image")
    assert "\n" not in repr(exc) and repr(exc).startswith("ResultNotAnImage(")
    # What Celery puts in a task-failed event (JSON): the repr, a plain string
    assert json.loads(json.dumps({"exception": repr(exc)}))["exception"] == repr(exc)


def test_failures_are_recorded_only_inside_a_recording_block() -> None:
    failures.record_failure("outside", JobError(code="x", message="y"))  # no-op, no error
    with failures.recording() as seen:
        failures.record_failure("inside", JobError(code="x", message="y"))
    assert [job_id for job_id, _ in seen] == ["inside"]
