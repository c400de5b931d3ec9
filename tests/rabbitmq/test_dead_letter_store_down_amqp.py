"""A refused message whose dead-letter write fails is held, not acked, and written later.

With the store (the job store's Redis) down, a poison message used to be acked anyway:
its content survived only in an ERROR log line. Now the consumer holds it unacked and
retries the write with backoff on its event loop; once the store is back the letter is
written and the message acked off its queue.
"""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.deadletters import DeadLetterStore
from tests.rabbitmq.test_poison_amqp import RAW, publish_raw
from tests.support import rabbitmq
from tests.support.procs import wait_until
from tests.support.rabbitmq import Vhost
from tests.support.redis_server import RedisServer
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


def unacked(vhost: Vhost, queue: str) -> int:
    out = rabbitmq.ctl("list_queues", "-p", vhost.name, "name", "messages_unacknowledged",
                       "--quiet", "--no-table-headers", check=True).stdout  # fmt: skip
    counts = dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line)
    return int(counts.get(queue, -1))


def test_poison_refused_while_the_store_is_down_is_held_and_written_when_it_returns(
    amqp_stack: Stack, vhost: Vhost, redis_process: RedisServer
) -> None:
    # Given a worker on RabbitMQ whose store is a Redis of this test's own, and a prefetch
    # above the number of poison messages (on a quorum queue a held message keeps its
    # prefetch slot: the consumer's prefetch cannot be raised while it consumes)
    amqp_stack.overrides["NBQ_REDIS_URL"] = redis_process.url
    worker = amqp_stack.start_worker(concurrency=len(RAW) + 1)
    # When the store goes down and raw messages arrive
    redis_process.stop()
    publish_raw(vhost, "poll")
    wait_until(
        lambda: amqp_stack.worker_logs().count("dead_letter_write_failed") >= len(RAW),
        timeout_s=60,
        what="every refusal's failed write",
    )
    # Then none is acked: all still on the queue (held unacked), and the write is retried
    wait_until(
        lambda: "dead_letter_write_retry_failed" in amqp_stack.worker_logs(),
        timeout_s=60,
        what="a retry while the store is down",
    )
    wait_until(
        lambda: unacked(vhost, "poll") == len(RAW), timeout_s=60, what="the refusals unacked"
    )
    assert worker.poll() is None, amqp_stack.worker_logs()[-3000:]
    # And when the store returns, every letter is written and every message acked
    redis_process.start()
    store = DeadLetterStore.from_settings(amqp_stack.settings())
    wait_until(lambda: store.count() == len(RAW), timeout_s=90, what="the held letters")
    wait_until(lambda: vhost.queue_counts().get("poll") == 0, timeout_s=60, what="acks")
    assert sorted(letter.reason for letter in store.list(limit=100)) == sorted(r for *_, r in RAW)
    assert worker.poll() is None
