"""Shared fixtures: each real service lives in its own module under ``tests/support``."""

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
