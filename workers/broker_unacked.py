"""Putting back the Redis broker's ``unacked`` deliveries that no live worker holds.

kombu's Redis transport keeps every delivered, not yet acked message in the ``unacked``
hash and its delivery time in ``unacked_index``; it puts one back only after the
visibility timeout (an hour) or when its own channel closes cleanly. A SIGKILLed worker's
deliveries, and those a worker lost with a broken connection (the countdown polls it
held), would wait the hour. The reconciler knows which tags live workers hold
(``workers/leases.py``) and restores the rest through kombu's own ``restore_by_tag``
(a WATCHed transaction: a tag acked meanwhile is not restored).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import redis

from nanobanana_queue.workers.settings import Settings

#: kombu's ``unacked_index``: delivery tag → delivery time (epoch s).
UNACKED_INDEX_KEY = "unacked_index"


def stale_tags(client: redis.Redis, *, delivered_before: float) -> list[str]:
    """Tags delivered before the given time and still unacked (one ZRANGE)."""
    raw = client.zrange(UNACKED_INDEX_KEY, "-inf", delivered_before, byscore=True)
    return [tag.decode() if isinstance(tag, bytes) else str(tag) for tag in raw]


def restore(settings: Settings, tags: Collection[str]) -> int:
    """Put ``tags`` back on their queues with kombu's own restore; returns how many."""
    if not tags:
        return 0
    from kombu.connection import Connection

    from nanobanana_queue.workers.app import celery_config

    options: dict[str, Any] = celery_config(settings).get("broker_transport_options", {})
    with Connection(settings.broker_url, transport_options=options) as conn:  # type: ignore[no-untyped-call]
        channel = conn.default_channel
        for tag in tags:
            channel.qos.restore_by_tag(tag, channel.client)
    return len(tags)
