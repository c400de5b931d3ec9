"""A task's metric events travel in one round trip, and none is lost on an error."""

from __future__ import annotations

import os
from typing import Any

import pytest

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.settings import Settings
from tests.support.procs import wait_until
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


def _api_calls(client: Any, cfg: Settings) -> int:
    key = f"{cfg.key_prefix}:metrics:c:api_calls"
    return sum(int(v) for v in client.hgetall(key).values())


def test_with_a_flush_window_a_process_holds_its_batches_and_writes_them_merged(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    metrics_on: None,
) -> None:
    client = redis_server.client()
    metrics.set_flush_window(60.0)  # NBQ_METRICS_FLUSH_S: nothing due during the test
    try:
        for _ in range(3):  # three tasks
            with metrics.batched():
                metrics.api_call("query", 200)
        assert _api_calls(client, settings) == 0  # held, not lost
        metrics.flush()  # what a pool child's or a worker's shutdown does
        assert _api_calls(client, settings) == 3
    finally:
        metrics.set_flush_window(0)


def test_a_held_batch_is_written_within_the_window_without_another_task(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    metrics_on: None,
) -> None:
    client = redis_server.client()
    metrics.set_flush_window(0.05)
    try:
        with metrics.batched():
            metrics.api_call("create", 200)
        wait_until(lambda: _api_calls(client, settings) == 1, timeout_s=10)
    finally:
        metrics.set_flush_window(0)


def test_closing_the_window_writes_what_is_held(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    metrics_on: None,
) -> None:
    client = redis_server.client()
    metrics.set_flush_window(60.0)
    with metrics.batched():
        metrics.bytes_stored(10)
    metrics.set_flush_window(0)
    assert _api_calls(client, settings) == 0
    assert client.hgetall(f"{settings.key_prefix}:metrics:c:bytes_stored")


def test_a_forked_child_does_not_write_what_its_parent_holds(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    metrics_on: None,
) -> None:
    client = redis_server.client()
    metrics.set_flush_window(60.0)
    try:
        with metrics.batched():
            metrics.api_call("query", 200)
        pid = os.fork()
        if pid == 0:  # the child: flushing here must send nothing of the parent's
            metrics.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        assert _api_calls(client, settings) == 0
        metrics.flush()
        assert _api_calls(client, settings) == 1  # counted once, by the parent
    finally:
        metrics.set_flush_window(0)


def test_the_forced_end_of_a_warm_shutdown_writes_what_is_held(
    settings: Settings,  # noqa: F811 - the imported fixture
    redis_server,
    metrics_on: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from nanobanana_queue.workers import shutdown

    # Given a worker holding a finished task's events (NBQ_METRICS_FLUSH_S)
    client = redis_server.client()
    metrics.set_flush_window(60.0)
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)  # the test process lives on
    no_consumer = SimpleNamespace(consumer=SimpleNamespace(task_consumer=None))
    monkeypatch.setattr(shutdown, "_worker", no_consumer)
    try:
        with metrics.batched():
            metrics.api_call("query", 200)
        # When its warm shutdown outlives the timeout (os._exit: no atexit, no signal)
        shutdown._give_back_and_exit()
        # Then the held events were written before the exit
        assert exits == [1]
        assert _api_calls(client, settings) == 1
    finally:
        metrics.set_flush_window(0)
