"""The Redis-commands benchmark's per-component summary (no command is counted here: the
figures are the benchmark's own, python -m benchmarks.redis_commands --monitor)."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.redis_commands import (
    BUDGET_PER_JOB,
    budget_line,
    by_component,
    component,
    pattern,
)

QUEUES = ("submit", "poll", "download", "notify", "celery")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("EVALSHA nbq:job:bench~*", "job store"),
        ("lua:ZADD nbq:state:generating", "job store"),
        ("ZADD nbq:producer:bench:jobs", "job store"),
        ("SET nbq:task:*", "job store"),  # a paid task's owner
        ("lua:HSET nbq:{s*}:job:*", "job store"),  # a sharded store's tag
        ("lua:ZCARD nbq:fair:fair:w:bench|*", "fair share"),
        ("lua:HINCRBY nbq:credit-book:*-*-*", "credits"),
        ("lua:HINCRBY nbq:metrics:c:jobs_state", "metrics"),
        ("HINCRBY nbq:{s*}:metrics:c:api_calls", "metrics"),
        ("HGET nbq:breaker:quota", "gates"),
        ("GET nbq:limit:create:blocked_until", "gates"),
        ("BRPOP submit", "celery/kombu"),
        ("LPUSH poll\\x*\\x*", "celery/kombu"),  # a priority list
        ("ZADD unacked_index", "celery/kombu"),
        ("PUBLISH /*.celeryev/task.sent", "celery/kombu"),
        ("MULTI", "celery/kombu"),
        ("ZCARD nbq:state:queued", "benchmark polling"),  # pipeline_run's progress
        ("INFO memory", "benchmark polling"),
        ("lua:ZCARD nbq:state:queued", "job store"),  # a script's is the store's
        ("HELLO *", "other"),
        ("ZRANGE nbq:workers", "other"),  # the workers' leases
        ("GET nbq:something-new", "other"),
    ],
)
def test_each_pattern_is_charged_to_its_component(pattern: str, expected: str) -> None:
    assert component(pattern, queues=QUEUES) == expected


def test_the_summary_has_every_component_and_divides_by_the_jobs() -> None:
    counts = Counter({"HINCRBY nbq:metrics:c:api_calls": 30, "BRPOP submit": 20})
    summary = by_component(counts, 10, queues=QUEUES)
    assert summary["metrics"] == 3.0 and summary["celery/kombu"] == 2.0
    assert summary["other"] == 0.0 and len(summary) == 8


def test_the_budget_line_says_pass_or_by_how_much_it_is_over() -> None:
    assert budget_line(BUDGET_PER_JOB).endswith("pass")
    assert budget_line(92.2, 80).endswith("OVER by 12.2")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('1.5 [0 lua] "HSET" "nbq:job:bench~0f0f0f0f0f0f0f0f" "x"', "lua:HSET nbq:job:bench~*"),
        ('1.5 [0 127.0.0.1:5] "SET" "nbq:task:task-unified-17-abcdefgh" "j"', "SET nbq:task:*"),
        ('1.5 [0 127.0.0.1:5] "EVALSHA" "ab12" "1" "nbq:fair:fair:"', "EVALSHA nbq:fair:fair:"),
        ('1.5 [0 127.0.0.1:5] "PING"', "PING"),
    ],
)
def test_a_monitor_line_becomes_a_pattern_without_ids(line: str, expected: str) -> None:
    assert pattern(line) == expected
