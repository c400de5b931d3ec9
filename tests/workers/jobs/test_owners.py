"""The task → job owner index: one owner per paid task, the creator always wins."""

from __future__ import annotations

import uuid

import pytest

from nanobanana_queue.workers.jobs.owners import OWNER_TTL_MARGIN_S, TaskOwners
from tests.support.redis_server import RedisServer


@pytest.fixture
def owners(session_redis: RedisServer) -> TaskOwners:
    return TaskOwners(session_redis.client(), prefix=f"o{uuid.uuid4().hex[:8]}", retention_s=60)


def test_the_first_claim_wins_and_a_second_job_is_told_the_owner(owners: TaskOwners) -> None:
    assert owners.owner("task-1") is None
    assert owners.claim("task-1", "alice~a1") == "alice~a1"
    assert owners.claim("task-1", "alice~a1") == "alice~a1"  # its own claim, again
    assert owners.claim("task-1", "bob~b1") == "alice~a1"  # refused: the owner answers
    assert owners.owner("task-1") == "alice~a1"


def test_the_job_whose_create_made_the_task_owns_it_even_after_a_claim(
    owners: TaskOwners,
) -> None:
    owners.claim("task-2", "alice~a1")
    owners.record("task-2", "bob~b1")  # bob's create answered with it
    assert owners.owner("task-2") == "bob~b1"
    assert owners.claim("task-2", "alice~a1") == "bob~b1"


def test_an_owner_outlives_the_records_retention(owners: TaskOwners) -> None:
    owners.record("task-3", "alice~a1")
    ttl_s = owners.redis.ttl(owners.key("task-3"))
    assert 60 < int(ttl_s) <= 60 + OWNER_TTL_MARGIN_S
