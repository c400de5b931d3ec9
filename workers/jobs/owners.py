"""One owner per paid task: the index ``task id → job id``.

A task id is a claim anyone can make: it is in the create body the vendor stores, in
Flower's task list, in a callback body. A paid task belongs to the one job whose create
made it, and to no other, so every path that attaches a task to a job asks this index
first:

* the submit stage *records* the owner when a create answers (the vendor's answer is
  the ground truth: the creator always wins, and a displaced claim is logged);
* adoption (a callback, ``nbq adopt``, ``Producer.adopt``, a raw ``nbq.adopt``, an early
  callback noted on the record) and a rescue *claim* it: atomically, the task becomes
  the job's only if no other job owns it. A claim is made before the job's record takes
  the task, so a record never holds a task whose claim went to another job.

The index lives in the job store (``<prefix>:task:<task_id>``, one string per task, one
key per call: on a Redis Cluster it needs no shared slot with the job). It expires
``OWNER_TTL_MARGIN_S`` after the store's retention; a task older than that cannot be
claimed anyway (its job's first create is later than the task: ``workers.stages.adopt``
refuses a task created before the job's first create was sent).
"""

from __future__ import annotations

from typing import Any

import redis

from nanobanana_queue.workers.logs import get_logger

log = get_logger("nbq.owners")

#: How long an owner outlives the store's retention (seconds): a late claim still finds it.
OWNER_TTL_MARGIN_S = 2 * 86400

#: KEYS[1] the task's owner key; ARGV[1] the claiming job id; ARGV[2] TTL in seconds.
#: Returns the owner after the call: the claimant (claimed, or already its) or another job.
_CLAIM_LUA = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return owner end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return ARGV[1]
"""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class TaskOwners:
    """``<prefix>:task:<task_id>`` → the job id that owns the paid task."""

    def __init__(self, client: redis.Redis, *, prefix: str = "nbq", retention_s: int = 604800):
        self.redis = client
        self.prefix = prefix
        self.ttl_s = int(retention_s) + OWNER_TTL_MARGIN_S
        self._claim = client.register_script(_CLAIM_LUA)

    def key(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def owner(self, task_id: str) -> str | None:
        """The job that owns ``task_id``, or None if no job has it."""
        return _text(self.redis.get(self.key(task_id)))

    def claim(self, task_id: str, job_id: str) -> str:
        """Make ``job_id`` the owner unless another job is; returns the owner after the call."""
        owner = _text(self._claim(keys=[self.key(task_id)], args=[job_id, self.ttl_s]))
        assert owner is not None
        return owner

    def record(self, task_id: str, job_id: str) -> None:
        """The create that made ``task_id`` answered for ``job_id``: it is the owner."""
        previous = self.redis.set(self.key(task_id), job_id, ex=self.ttl_s, get=True)
        self.recorded(task_id, job_id, previous)

    def record_command(self, task_id: str, job_id: str) -> list[Any]:
        """``record``'s one command, for a caller that sends it with another in one round
        trip; its reply goes to ``recorded``."""
        return ["SET", self.key(task_id), job_id, "EX", self.ttl_s, "GET"]

    def recorded(self, task_id: str, job_id: str, previous: Any) -> None:
        """What ``record``'s command answered (the owner it replaced, if any)."""
        previous = _text(previous)
        if previous is not None and previous != job_id:
            log.error(
                "task_owner_displaced",
                job_id=job_id,
                evolink_task_id=task_id,
                claimed_by=previous,
                detail="a create answered with a task another job had claimed; the creator owns it",
            )


def owners_of(store: Any) -> TaskOwners:
    """The owner index next to a ``JobStore`` (same Redis, prefix and retention)."""
    return TaskOwners(store.redis, prefix=store.prefix, retention_s=store.retention_s)
