"""How many messages wait in each queue of the Redis broker (kombu's list layout).

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
