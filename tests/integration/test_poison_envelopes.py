"""Raw bytes written straight onto a Redis queue list cannot kill a worker.

kombu's Redis transport keeps each message as a JSON *envelope* on the queue's list
(``{"body", "headers", "content-type", "properties": {"delivery_tag", "delivery_info",
"body_encoding"}}``) and decodes it before Celery, and so before the consumer guard, sees
anything. Anyone who can ``LPUSH`` to the broker's Redis can put anything there. The
sending side here is a plain redis client, no kombu: ``redis-cli LPUSH poll "not json"``.

One worker per pool kind, as deployed (prefork on ``submit``, threads on ``poll`` and
``download``), takes every shape of :data:`tests.support.raw_envelopes.SHAPES` from
each of its queues, then one real job: it is stored by the same two processes, and every
raw payload is a dead letter with its reason, counted in ``nbq_dead_letters_total``. The
workers start over hostile entries in kombu's ``unacked`` hash too.
"""

from __future__ import annotations

from collections import Counter

import pytest

from nanobanana_queue.workers.deadletters import DeadLetterStore
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.metrics_exporter import build_registry
from tests.support.metrics_guard import settled
from tests.support.procs import wait_until
from tests.support.raw_envelopes import SHAPES, UNACKED_POISON
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

QUEUES = ("submit", "poll", "download")


def _queues_empty(stack: Stack) -> bool:
    client = stack.redis.client()
    lists = [q + suffix for q in QUEUES for suffix in ("", *(f"\x06\x16{p}" for p in (3, 6, 9)))]
    return all(client.llen(k) == 0 for k in lists) and client.hlen("unacked") == 0


def _dead_letter_counts(stack: Stack) -> Counter[tuple[str, str]]:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(build_registry(stack.settings())).decode()
    return Counter(
        {
            (s.labels["queue"], s.labels["reason"]): int(s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "nbq_dead_letters_total"
        }
    )


def test_raw_payloads_on_every_queue_are_dead_lettered_by_both_pool_kinds(stack: Stack) -> None:
    # Given hostile entries in kombu's unacked hash, older than the visibility timeout
    # (each worker restores those when it starts: they used to end it there, every time)
    client = stack.redis.client()
    for tag, raw in UNACKED_POISON.items():
        client.hset("unacked", tag, raw)
    client.zadd("unacked_index", dict.fromkeys(UNACKED_POISON, 1.0))
    # And the deployed pool kinds: prefork on submit, threads on poll and download
    submit = stack.start_worker(queues="submit", pool="prefork", concurrency=1, name="sub")
    others = stack.start_worker(queues="poll,download", pool="threads", concurrency=2, name="pd")
    pids = (submit.pid, others.pid)
    # When every raw shape is pushed onto each queue's list (no kombu on this side)
    for queue in QUEUES:
        for shape in SHAPES:
            client.lpush(queue + shape.list_suffix, shape.raw)
    # And one real job follows
    producer = stack.producer()
    job = producer.enqueue({"prompt": "behind raw poison", "quality": "1K"}).job_id
    # Then the job is stored by the same two processes (a dead one ends the wait early)
    workers = (submit, others)
    wait_until(
        lambda: any(w.poll() is not None for w in workers) or producer.status(job).is_terminal,
        timeout_s=120,
        what="the job, or a dead worker",
    )
    assert [w.poll() for w in workers] == [None, None], stack.worker_logs()[-3000:]
    assert producer.status(job).state == JobState.STORED
    assert (submit.pid, others.pid) == pids
    # And every raw payload is a dead letter with its queue and reason
    store = DeadLetterStore.from_settings(stack.settings())
    expected = Counter((s.claimed_queue or q, s.reason) for q in QUEUES for s in SHAPES)
    expected.update({("unacked", "undecodable"): 1, ("unacked", "bad_envelope"): 2})
    total = sum(expected.values())
    wait_until(lambda: store.count() >= total, timeout_s=60, what="dead letters")
    letters = store.list(limit=10 * total)
    assert Counter((letter.queue, letter.reason) for letter in letters) == expected
    assert {letter.hostname for letter in letters} == {"sub@test", "pd@test"}
    # And each letter holds a bounded, escaped excerpt of what was pushed
    assert all(len(letter.body) <= 17 * 1024 for letter in letters)
    assert all("\x1b" not in letter.body for letter in letters)
    # And the dead-letter metric counts each of them (written within NBQ_METRICS_FLUSH_S)
    counted = settled(lambda: _dead_letter_counts(stack), lambda c: c == expected)
    assert counted == expected
    # And nothing is left in the queues or held unacked
    wait_until(lambda: _queues_empty(stack), timeout_s=60, what="empty queues")
    assert "Unrecoverable error" not in stack.worker_logs()
