"""Shared fixtures: each real service lives in its own module under ``tests/support``."""

pytest_plugins = [
    "tests.support.redis_server",
]
