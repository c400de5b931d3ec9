"""The retry policy: for each cause of a retry, its budget, its delay and whom it may fail.

This table is the one place that decides *how* a retry happens; ``policy/errors.py``
decides *whether* an error is retried at all (``Action.RETRY`` and friends). Stages name
a cause (``workers.stages.common.retry``) and get a ``Retry`` step built from here.

==================  ==========  ===============================  ===================
cause               budget      delay                            may fail the job from
==================  ==========  ===============================  ===================
breaker_open        unbounded   the breaker's wait, 1..300 s     (never fails)
quota_exceeded      unbounded   the breaker's wait, 1..300 s     (never fails)
key_rejected        unbounded   60 s (re-check the paused key)   (never fails)
create_failed       transient   backoff, at least Retry-After    queued
query_failed        transient   backoff, at least Retry-After    generating
download_failed     transient   backoff                          downloading
adopt_failed        transient   backoff, at least Retry-After    (task fails instead)
store_unreachable   unbounded   backoff (keeps counting)         (never fails)
==================  ==========  ===============================  ===================

*transient* is NBQ_MAX_TRANSIENT_RETRIES; *backoff* is the jittered exponential
``Backoff`` (NBQ_RETRY_BACKOFF_BASE_S / _MAX_S). Unbounded waits other than the store's
do not spend the transient budget: a job that waited out a quota pause gets its full
budget for the next transient error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.policy.schedule import Backoff

#: Longest single wait of a queued job on the breaker (a hop, re-checked after).
MAX_QUOTA_WAIT_S = 300.0
#: How often a job paused by a rejected key re-checks the breaker.
KEY_RECHECK_S = MAX_QUOTA_WAIT_S / 5


class RetryCause(StrEnum):
    BREAKER_OPEN = "breaker_open"  # submissions paused (quota or key): jobs wait queued
    QUOTA_EXCEEDED = "quota_exceeded"  # this create was refused for quota (402)
    KEY_REJECTED = "key_rejected"  # this create was refused: the key is invalid (401)
    CREATE_FAILED = "create_failed"  # a create that made no task (5xx, 429, transport)
    QUERY_FAILED = "query_failed"  # a task query that failed transiently
    DOWNLOAD_FAILED = "download_failed"  # a result fetch or S3 write that failed
    ADOPT_FAILED = "adopt_failed"  # re-fetching a task to adopt failed transiently
    STORE_UNREACHABLE = "store_unreachable"  # the job store did not answer


class Delay(StrEnum):
    BREAKER = "breaker"  # the breaker's own wait, clamped to [1, MAX_QUOTA_WAIT_S]
    KEY_RECHECK = "key_recheck"  # KEY_RECHECK_S
    BACKOFF = "backoff"  # Backoff.delay_s(attempt), at least a server's Retry-After


@dataclass(frozen=True)
class RetryRule:
    bounded: bool
    delay: Delay
    #: Whether the retry counts towards the transient budget (Celery's retries).
    spends_budget: bool = True
    #: States from which an exhausted retry fails the job (None: it never fails it).
    fail_from: tuple[JobState, ...] | None = None


RETRY_RULES: dict[RetryCause, RetryRule] = {
    RetryCause.BREAKER_OPEN: RetryRule(False, Delay.BREAKER, spends_budget=False),
    RetryCause.QUOTA_EXCEEDED: RetryRule(False, Delay.BREAKER, spends_budget=False),
    RetryCause.KEY_REJECTED: RetryRule(False, Delay.KEY_RECHECK, spends_budget=False),
    RetryCause.CREATE_FAILED: RetryRule(True, Delay.BACKOFF, fail_from=(JobState.QUEUED,)),
    RetryCause.QUERY_FAILED: RetryRule(True, Delay.BACKOFF, fail_from=(JobState.GENERATING,)),
    RetryCause.DOWNLOAD_FAILED: RetryRule(True, Delay.BACKOFF, fail_from=(JobState.DOWNLOADING,)),
    RetryCause.ADOPT_FAILED: RetryRule(True, Delay.BACKOFF),
    RetryCause.STORE_UNREACHABLE: RetryRule(False, Delay.BACKOFF),
}


def delay_s(
    rule: RetryRule,
    *,
    attempt: int,
    backoff: Backoff,
    rng: random.Random,
    wait_s: float | None = None,
) -> float:
    """How long before retry number ``attempt``; ``wait_s`` is the breaker's wait or a
    server's Retry-After."""
    if rule.delay is Delay.BREAKER:
        return min(max(wait_s or 0.0, 1.0), MAX_QUOTA_WAIT_S)
    if rule.delay is Delay.KEY_RECHECK:
        return KEY_RECHECK_S
    return backoff.delay_s(attempt, rng, wait_s)


def budget(rule: RetryRule, *, transient_retries: int) -> int | None:
    """How many retries this cause may use (None: without bound)."""
    return transient_retries if rule.bounded else None
