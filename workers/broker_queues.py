"""How many messages wait in each queue of the broker: Redis (kombu's lists) or RabbitMQ.

Read by the metrics exporter (``nbq_queue_length``) and by the reconciler, which must not
mistake a job waiting its turn in a long queue for one whose message was lost.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

#: Kombu's Redis transport keeps priority messages in ``<queue>\x06\x16<step>`` lists.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
#: Kombu's hash of delivered-but-unacked messages (late-ack tasks and held countdowns).
UNACKED_KEY = "unacked"


def queue_keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS)]


def queue_lengths(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting (not yet delivered) per queue, in one round trip."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for key in queue_keys(queue):
            pipe.llen(key)
    results = iter(pipe.execute())
    per_queue = len(PRIORITY_STEPS) + 1
    return {queue: sum(int(next(results)) for _ in range(per_queue)) for queue in names}


def amqp_queue_lengths(
    url: str, queues: Iterable[str], *, timeout_s: float = 5.0
) -> dict[str, int]:
    """Messages ready (not yet delivered) per queue on RabbitMQ, by passive declare.

    A passive ``queue.declare`` answers with the queue's ready-message count over plain
    AMQP: no management plugin, no second set of credentials, the same vhost permissions
    the workers have. Countdown messages waiting in ``celery_delayed_*`` are not counted
    (they are not in a stage's queue yet), like held countdowns on Redis. A queue not
    declared yet (no worker has started) counts 0. Connection errors propagate.
    """
    from amqp.exceptions import NotFound
    from kombu.connection import Connection

    lengths: dict[str, int] = {}
    with Connection(url, connect_timeout=timeout_s) as conn:  # type: ignore[no-untyped-call]
        channel = conn.channel()
        try:
            for queue in queues:
                try:
                    _, count, _ = channel.queue_declare(queue=queue, passive=True)
                except NotFound:  # the broker closed the channel: open another
                    count = 0
                    channel = conn.channel()
                lengths[queue] = int(count)
        finally:
            channel.close()
    return lengths
