"""The same message delivered more than once: one paid create, one live poll chain.

Brokers deliver at least once, and other services send ``nbq.submit``/``nbq.generate``
themselves. Duplicates are harmless because submit's ``queued → submitting`` transition
has one winner and a poll only continues while it holds the job's current token.

A duplicate submit that lands while the job is generating starts one poll with the
current token (``already_submitted``); that poll takes the chain over and the old one
stops at its next hop. So each duplicate may cost at most one extra query, never a
second chain: queries per task stay within ``control + duplicates``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers.contract import TASK_GENERATE, TASK_SUBMIT
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.stages.intake import intake
from tests.faults.helpers import (
    assert_images_intact,
    assert_nothing_lost,
    assert_one_create_each,
    enqueue,
    task_outcomes,
)
from tests.support.procs import wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

JOBS = 3
CONTROLS = 2
#: Polls hang this long (real seconds), so duplicates land while a job is generating.
QUERY_DELAY_S = 0.4


def _recorded(producer: Producer, count: int, prompt: str) -> list[str]:
    """Job records written without any message: the test sends them itself."""
    ids = []
    for i in range(count):
        record = intake(producer.runtime, request={"prompt": f"{prompt} {i}", "quality": "1K"},
                        job_id=None)  # fmt: skip
        assert record is not None
        ids.append(record.job_id)
    return ids


def _queries_per_job(stack: Stack, producer: Producer, job_ids: list[str]) -> dict[str, int]:
    by_task: dict[str, int] = stack.emulator.stats()["queries_by_task"]
    return {j: by_task.get(producer.status(j).evolink_task_id or "", 0) for j in job_ids}


def _assert_one_chain(
    stack: Stack, producer: Producer, dup_ids: list[str], controls: list[str], sent: dict[str, int]
) -> None:
    """Each duplicate may cost one extra query (it takes the chain over), never a 2nd chain."""
    control = max(_queries_per_job(stack, producer, controls).values())
    queries = _queries_per_job(stack, producer, dup_ids)
    too_many = {j: (n, control, sent[j]) for j, n in queries.items() if n > control + sent[j]}
    assert not too_many, f"(queries, control max, duplicates) per job: {too_many}"


def _flood(send: Any, job_ids: list[str], *, threads: int, each: int) -> dict[str, int]:
    """``threads`` threads each send every job's message ``each`` times, all at once."""
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        for _ in range(each):
            for job_id in job_ids:
                send(job_id)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(run) for _ in range(threads)]:
            future.result()
    return dict.fromkeys(job_ids, threads * each)


def test_a_submit_delivered_several_times_in_a_row_creates_once_and_polls_one_chain(
    stack: Stack,
) -> None:
    stack.emulator.add_fault(endpoint="query", action="delay", seconds=QUERY_DELAY_S, match="twice")
    stack.start_worker()
    producer = stack.producer()
    controls = enqueue(producer, CONTROLS, prompt="twice control")
    dup_ids = _recorded(producer, JOBS, "twice dup")

    def send(job_id: str) -> None:
        producer.celery.send_task(TASK_SUBMIT, kwargs={"job_id": job_id})

    # Given each job's nbq.submit sent three times in a row
    sent = dict.fromkeys(dup_ids, 0)
    for job_id in dup_ids:
        for _ in range(3):
            send(job_id)
            sent[job_id] += 1
    # And three more once it is generating (a redelivery after the create)
    for job_id in dup_ids:
        _wait_past_queued(producer, job_id)
        for _ in range(3):
            send(job_id)
            sent[job_id] += 1
    records = stack.wait_all(producer, [*dup_ids, *controls])
    # Then one create each, every job stored intact, and one poll chain per job
    assert_nothing_lost(records)
    assert_one_create_each(stack, [*dup_ids, *controls])
    assert_images_intact(stack, records)
    _assert_one_chain(stack, producer, dup_ids, controls, sent)
    # And the duplicates really met a generating job, and their polls were stopped
    outcomes = task_outcomes(stack)
    assert outcomes["already_submitted"] >= 1 and outcomes["stale_token"] >= 1, outcomes


def test_a_submit_sent_concurrently_from_several_threads_creates_once(stack: Stack) -> None:
    stack.emulator.add_fault(endpoint="query", action="delay", seconds=QUERY_DELAY_S, match="twice")
    stack.start_worker()
    producer = stack.producer()
    controls = enqueue(producer, CONTROLS, prompt="twice control")
    dup_ids = _recorded(producer, JOBS, "twice dup")

    def send(job_id: str) -> None:
        producer.celery.send_task(TASK_SUBMIT, kwargs={"job_id": job_id})

    # Given 4 threads each sending every job's nbq.submit 3 times at once
    sent = _flood(send, dup_ids, threads=4, each=3)
    # And the same again while the jobs are generating
    for job_id in dup_ids:
        _wait_past_queued(producer, job_id)
    more = _flood(send, dup_ids, threads=4, each=2)
    sent = {j: sent[j] + more[j] for j in dup_ids}
    records = stack.wait_all(producer, [*dup_ids, *controls])
    assert_nothing_lost(records)
    assert_one_create_each(stack, [*dup_ids, *controls])
    assert_images_intact(stack, records)
    _assert_one_chain(stack, producer, dup_ids, controls, sent)


def test_the_same_generate_sent_twice_and_concurrently_records_and_creates_once(
    stack: Stack,
) -> None:
    stack.emulator.add_fault(endpoint="query", action="delay", seconds=QUERY_DELAY_S, match="twice")
    stack.start_worker()
    producer = stack.producer()
    controls = enqueue(producer, CONTROLS, prompt="twice control")
    twice = [f"twice-seq-{i}" for i in range(JOBS)]
    flooded = [f"twice-par-{i}" for i in range(JOBS)]

    def send(job_id: str) -> None:
        producer.celery.send_task(
            TASK_GENERATE,
            kwargs={"request": {"prompt": f"twice {job_id}", "quality": "1K"}, "job_id": job_id},
        )

    # Given nbq.generate for a caller-chosen job id sent twice in a row (no record before)
    for job_id in twice:
        send(job_id)
        send(job_id)
    # And for others, from 4 threads at once, 2 times each
    sent = _flood(send, flooded, threads=4, each=2)
    sent.update(dict.fromkeys(twice, 2))
    records = stack.wait_all(producer, [*twice, *flooded, *controls])
    # Then one record, one create and one chain per job id; all stored
    assert_nothing_lost(records)
    assert_one_create_each(stack, [*twice, *flooded, *controls])
    assert_images_intact(stack, records)
    _assert_one_chain(stack, producer, [*twice, *flooded], controls, sent)
    assert all(r.attempts == 1 for r in records.values())


def _wait_past_queued(producer: Producer, job_id: str) -> None:
    wait_until(
        lambda: producer.status(job_id).state not in (JobState.QUEUED, JobState.SUBMITTING),
        timeout_s=60,
        interval_s=0.02,
        what=f"job {job_id} created",
    )
