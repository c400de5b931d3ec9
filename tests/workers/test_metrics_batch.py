"""A task's metric events travel in one round trip, and none is lost on an error."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.settings import Settings
from tests.workers.test_metrics import settings  # noqa: F401 - the fixture


def test_events_inside_a_batch_are_written_once_at_its_end(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    metrics_on: None,
) -> None:
    client = redis_server.client()
    key = f"{settings.key_prefix}:metrics:c:api_calls"
    with metrics.batched():
        metrics.api_call("create", 200)
        metrics.api_call("query", 200)
        metrics.api_call("query", 200)
        assert not client.exists(key)  # nothing written yet
    values = {k.decode(): int(v) for k, v in client.hgetall(key).items()}
    assert sorted(values.values()) == [1, 2]


def test_a_batch_is_written_even_when_the_task_raises(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    metrics_on: None,
) -> None:
    def failing_stage() -> None:
        metrics.job_failed("content_policy_violation")
        raise RuntimeError("the stage failed")

    with pytest.raises(RuntimeError), metrics.batched():
        failing_stage()
    key = f"{settings.key_prefix}:metrics:c:jobs_failed"
    assert redis_server.client().hgetall(key)


def test_nested_batches_join_the_outer_one(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    metrics_on: None,
) -> None:
    client = redis_server.client()
    with metrics.batched():
        with metrics.batched():
            metrics.bytes_stored(10)
        assert not client.keys(f"{settings.key_prefix}:metrics:*")
    assert client.keys(f"{settings.key_prefix}:metrics:*")


def test_a_histogram_observation_is_two_increments_and_the_count_is_the_buckets_total(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    metrics_on: None,
) -> None:
    with metrics.batched():
        metrics.polls_per_job(3)
        metrics.polls_per_job(3)
        metrics.polls_per_job(12)
    key = f"{settings.key_prefix}:metrics:h:polls_per_job"
    stored = {k.decode(): float(v) for k, v in redis_server.client().hgetall(key).items()}
    # Same bucket twice in one batch: added up before it is written
    assert stored == {"b:3.0": 2.0, "b:15.0": 1.0, "sum": 18.0}
