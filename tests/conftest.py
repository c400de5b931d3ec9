"""Shared fixtures: each real service lives in its own module under ``tests/support``."""

pytest_plugins = [
    "tests.support.s3_server",
    "tests.support.redis_server",
]
