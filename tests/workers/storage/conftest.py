"""Storage fixtures: a store on the session's moto server and a key prefix per test."""

from __future__ import annotations

import uuid

import pytest

from nanobanana_queue.workers.storage.s3 import ObjectStore
from tests.support.s3_server import S3Server
from tests.workers.storage.helpers import store_for


@pytest.fixture
def store(session_s3: S3Server) -> ObjectStore:
    return store_for(session_s3)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own on the shared server."""
    return f"t/{uuid.uuid4().hex}"
