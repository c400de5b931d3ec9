"""The retry table: every cause has one rule deciding its budget, delay and fail-from."""

from __future__ import annotations

import random

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.policy.retry import (
    KEY_RECHECK_S,
    MAX_QUOTA_WAIT_S,
    RETRY_RULES,
    RetryCause,
    budget,
    delay_s,
)
from nanobanana_queue.workers.policy.schedule import Backoff

BACKOFF = Backoff(base_s=1.0, max_s=60.0)


def test_every_cause_has_exactly_one_rule() -> None:
    assert set(RETRY_RULES) == set(RetryCause)


@pytest.mark.parametrize(
    "cause", [RetryCause.BREAKER_OPEN, RetryCause.QUOTA_EXCEEDED, RetryCause.KEY_REJECTED]
)
def test_quota_and_key_waits_are_unbounded_never_fail_and_keep_the_transient_budget(
    cause: RetryCause,
) -> None:
    rule = RETRY_RULES[cause]
    assert budget(rule, transient_retries=5) is None
    assert rule.fail_from is None and rule.spends_budget is False


def test_the_breakers_wait_is_one_hop_of_at_most_max_quota_wait() -> None:
    rule = RETRY_RULES[RetryCause.BREAKER_OPEN]
    rng = random.Random(1)
    assert delay_s(rule, attempt=0, backoff=BACKOFF, rng=rng, wait_s=0.0) == 1.0
    assert delay_s(rule, attempt=0, backoff=BACKOFF, rng=rng, wait_s=42.0) == 42.0
    assert delay_s(rule, attempt=0, backoff=BACKOFF, rng=rng, wait_s=86400) == MAX_QUOTA_WAIT_S
    key = RETRY_RULES[RetryCause.KEY_REJECTED]
    assert delay_s(key, attempt=9, backoff=BACKOFF, rng=rng) == KEY_RECHECK_S


@pytest.mark.parametrize(
    ("cause", "fail_from"),
    [
        (RetryCause.CREATE_FAILED, (JobState.QUEUED,)),
        (RetryCause.QUERY_FAILED, (JobState.GENERATING,)),
        (RetryCause.DOWNLOAD_FAILED, (JobState.DOWNLOADING,)),
        (RetryCause.ADOPT_FAILED, None),
    ],
)
def test_transient_failures_back_off_within_the_transient_budget_then_fail_their_stage(
    cause: RetryCause, fail_from: tuple[JobState, ...] | None
) -> None:
    rule = RETRY_RULES[cause]
    assert budget(rule, transient_retries=5) == 5
    assert rule.fail_from == fail_from and rule.spends_budget
    rng = random.Random(2)
    for attempt in range(8):
        ceiling = min(60.0, 2**attempt)
        assert ceiling / 2 <= delay_s(rule, attempt=attempt, backoff=BACKOFF, rng=rng) <= ceiling
    # A server's Retry-After is a floor
    assert delay_s(rule, attempt=0, backoff=BACKOFF, rng=rng, wait_s=30.0) == 30.0


def test_a_store_outage_is_waited_out_without_bound_and_never_fails_a_job() -> None:
    rule = RETRY_RULES[RetryCause.STORE_UNREACHABLE]
    assert budget(rule, transient_retries=5) is None and rule.fail_from is None
