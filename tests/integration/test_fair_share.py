"""Fair share on real processes: a backlog of one producer does not make another wait
behind all of it. The order of creates is the emulator's own create log
(``/_emulator/tasks``, by ``Idempotency-Key`` ``nbq-<producer>~<id>-<n>``), not our records."""

from __future__ import annotations

import httpx
import pytest

from nanobanana_queue.workers.jobs.state import JobState
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

#: A's backlog, B's few jobs, the create rate (creates/s; the bucket's burst is as many).
A_JOBS, B_JOBS, RATE = 12, 4, 3


def creates_in_order(stack: Stack) -> list[str]:
    """The producer of each create, in the order the emulator made the tasks."""
    tasks = httpx.get(f"{stack.emulator.url}/_emulator/tasks", timeout=10, trust_env=False).json()
    keys = [t["idempotency_key"] for t in sorted(tasks, key=lambda t: t["created_at"])]
    return [key.removeprefix("nbq-").split("~", 1)[0] for key in keys]


def check_backlog_does_not_starve_another_producer(stack: Stack) -> None:
    # Given a backlog of A's jobs, then a few of B's, queued before any worker runs
    stack.overrides.update(NBQ_CREATES_PER_S=str(RATE))
    producer = stack.producer()
    request = {"prompt": "fair", "quality": "1K"}
    handles = [producer.enqueue(request, producer="bulk") for _ in range(A_JOBS)]
    handles += [producer.enqueue(request, producer="shop") for _ in range(B_JOBS)]
    # When a worker drains them at a limited create rate
    stack.start_worker(concurrency=2)
    records = stack.wait_all(producer, [h.job_id for h in handles], timeout_s=120)
    assert {r.state for r in records.values()} == {JobState.STORED}
    # Then every job was created once, and while both waited, creates alternated: B's
    # jobs were not all behind A's backlog (FIFO would make them the last four)
    order = creates_in_order(stack)
    assert sorted(order) == sorted(["bulk"] * A_JOBS + ["shop"] * B_JOBS)
    first, last = order.index("shop"), len(order) - 1 - order[::-1].index("shop")
    between = order[first : last + 1]
    assert between.count("bulk") <= between.count("shop") + 1, order
    assert first <= RATE + 2, order  # at most A's first burst before B's jobs are known


def test_a_backlog_does_not_starve_another_producer(stack: Stack) -> None:
    check_backlog_does_not_starve_another_producer(stack)
