"""Shared fixtures: each real service lives in its own module under ``tests/support``.

The suite has two tiers, derived here from what a test uses (never listed by hand):

* ``integration``: tests under ``tests/faults``, ``tests/integration`` and
  ``tests/rabbitmq``, modules marked ``integration``, and every test that asks for a
  process of its own (a Celery worker stack, a server it stops, a cluster, Sentinel).
* ``unit``: everything else — the domain logic, on the session's lent redis-server,
  emulator and S3 server at most. ``pytest -m unit`` runs this tier alone.

Plain ``pytest`` runs both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.support.emulator_server",
    "tests.support.s3_server",
    "tests.support.redis_server",
    "tests.support.sentinel",
    "tests.support.redis_cluster",
    "tests.support.stack",
    "tests.support.metrics_guard",
    "tests.support.logging_guard",
]

#: Directories whose every test runs the system on real processes.
INTEGRATION_DIRS = frozenset({"faults", "integration", "rabbitmq"})

#: Fixtures that start processes for one test (or stop a server): their users are
#: integration tests. The lent servers (``redis_server``, ``emulator_server``,
#: ``s3_server``, ``session_*``) are not: they start once per session.
PROCESS_FIXTURES = frozenset(
    {
        "stack",
        "redis_process",
        "emulator_process",
        "s3_process",
        "emulator_factory",
        "redis_cluster",
        "redis_cluster_with_replicas",
        "sentinel_group",
        "tls_sentinel_group",
        "vhost",
        "amqp_stack",
        "own_nodes",
        "redis_with",  # tests/workers/jobs/test_durability.py: servers with other options
    }
)

TESTS = Path(__file__).resolve().parent


def is_integration(item: pytest.Item) -> bool:
    if item.get_closest_marker("integration") is not None:
        return True
    parts = item.path.relative_to(TESTS).parts
    if parts and parts[0] in INTEGRATION_DIRS:
        return True
    return bool(PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration if is_integration(item) else pytest.mark.unit)
