"""API storms from the emulator's fault API: jobs wait or retry, never fail, never pay twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import (
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
    wait_for_hits,
)
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

JOBS = 4
BREAKER_KEY = "nbq:breaker:quota"


def _run_storm(
    stack: Stack, rules: list[dict[str, Any]], *, overrides: dict[str, str] | None = None
) -> dict[str, Any]:
    """Enqueue JOBS jobs under ``rules``; every job must be stored with one create."""
    stack.overrides.update(overrides or {})
    added = [stack.emulator.add_fault(match="storm", **rule) for rule in rules]
    stack.start_worker()
    producer = stack.producer()
    job_ids = enqueue(producer, JOBS, prompt="storm")
    records = stack.wait_all(producer, job_ids)
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)
    for rule in added:  # each fault really fired
        wait_for_hits(stack, rule, timeout_s=1)
    return stack.emulator.stats()


def test_a_402_burst_pauses_submissions_and_every_job_completes_after_top_up(
    stack: Stack, nbq_cli: Callable[..., Any]
) -> None:
    # Given no credits left
    stack.emulator.set_credits(0)
    stack.start_worker()
    producer = stack.producer()
    job_ids = enqueue(producer, JOBS, prompt="broke")
    redis = stack.redis.client()
    # When the workers meet 402s (several probes)
    wait_until(
        lambda: stack.emulator.stats()["creates_rejected"].get("402", 0) >= 3,
        timeout_s=30,
        what="repeated 402 probes",
    )
    # Then the breaker is open, `nbq quota` says so, and every job is queued, never failed
    assert redis.hget(BREAKER_KEY, "state") == b"open"
    shown = json.loads(nbq_cli("quota", "--json").stdout)
    assert shown["state"] == "open" and shown["kind"] == "quota" and shown["trips"] >= 1
    assert shown["jobs_waiting"] >= JOBS - 1  # one may be the probe, briefly submitting
    for _ in range(10):  # sampled through several probes: waiting, never failed
        states = {producer.status(j).state for j in job_ids}
        assert states <= {JobState.QUEUED, JobState.SUBMITTING}, states
        time.sleep(0.1)
    # When credits are restored
    stack.emulator.set_credits(None)
    records = stack.wait_all(producer, job_ids)
    # Then all complete, the breaker is closed, and nothing was paid twice
    assert_nothing_lost(records)
    assert_one_create_each(stack, job_ids)
    assert_images_intact(stack, records)
    assert redis.hget(BREAKER_KEY, "state") == b"closed"
    assert json.loads(nbq_cli("quota", "--json").stdout)["state"] == "closed"


def test_429_and_5xx_answers_on_create_and_query_are_retried_to_completion(stack: Stack) -> None:
    rules = [
        {
            "endpoint": endpoint,
            "action": "status",
            "status": status,
            "count": 1,
            **({"retry_after": 10.0} if status == 429 else {}),
        }
        for endpoint in ("create", "query")
        for status in (429, 500, 502, 503)
    ]
    stats = _run_storm(stack, rules)
    assert stats["creates_rejected"].get("429") == 1
    assert stats["queries_rejected"].get("503") == 1


#: The operator's opt-in to resend unknown creates under their key, against a server that
#: honours it (the emulator's default is the vendor's documented: it does not).
TRUSTED_IDEMPOTENCY = {"NBQ_IDEMPOTENT_CREATES": "true"}


def _trust_idempotency(stack: Stack) -> dict[str, str]:
    stack.emulator.set_idempotency(True)
    return TRUSTED_IDEMPOTENCY


def test_malformed_json_answers_are_retried_and_a_made_create_is_not_paid_twice(
    stack: Stack,
) -> None:
    rules = [{"endpoint": e, "action": "malformed_json", "count": 2} for e in ("create", "query")]
    stats = _run_storm(stack, rules, overrides=_trust_idempotency(stack))
    # The malformed creates had made their task: the retry got it back by Idempotency-Key
    assert stats["idempotent_repeats"] >= 2


def test_answers_slower_than_the_client_timeout_are_retried_without_a_second_create(
    stack: Stack,
) -> None:
    rules = [
        {"endpoint": e, "action": "delay", "seconds": 2.5, "count": 2} for e in ("create", "query")
    ]
    # (A create that times out may still be made: resending it needs trusted idempotency.)
    _run_storm(
        stack, rules, overrides={"NBQ_HTTP_READ_TIMEOUT_S": "1", **_trust_idempotency(stack)}
    )
    worker_log = stack.worker_logs()
    assert "ApiTimeoutError" in worker_log or "timeout" in worker_log


def test_a_connection_dropped_after_the_create_resends_the_same_key_and_pays_once(
    stack: Stack,
) -> None:
    # The outcome-unknown case with NBQ_IDEMPOTENT_CREATES=true (an opt-in since the vendor
    # documents no support; the default is in tests/faults/test_unknown_outcomes.py)
    stats = _run_storm(
        stack,
        [{"endpoint": "create", "action": "drop_after_create", "count": 2}],
        overrides=_trust_idempotency(stack),
    )
    assert stats["idempotent_repeats"] >= 2


def test_without_trusted_idempotency_an_unknown_create_outcome_fails_the_job_not_resent(
    stack: Stack,
) -> None:
    # Given the defaults: neither NBQ_IDEMPOTENT_CREATES nor NBQ_AT_LEAST_ONCE_CREATES
    stack.emulator.add_fault(
        endpoint="create", action="drop_after_create", count=1, match="unlucky"
    )
    stack.start_worker()
    producer = stack.producer()
    unlucky = producer.enqueue({"prompt": "unlucky one", "quality": "1K"}).job_id
    others = enqueue(producer, 2, prompt="lucky")
    records = stack.wait_all(producer, [unlucky, *others])
    # Then the unlucky job fails with outcome_unknown (its one create is paid, never resent)
    assert records[unlucky].state is JobState.FAILED
    error = records[unlucky].error
    assert error is not None and error.code == "outcome_unknown"
    assert_nothing_lost({j: records[j] for j in others})
    assert_one_create_each(stack, [unlucky, *others])
