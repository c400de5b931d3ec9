"""kombu's ack emulation on Redis: fewer commands, the same redelivery."""

from __future__ import annotations

import threading
import time

from kombu.connection import Connection

from nanobanana_queue.workers.startup import patch_kombu
from tests.support.redis_server import RedisServer

patch_kombu()  # what a worker does at start: the plain-pipeline bookkeeping


def _monitor(redis_server: RedisServer, seen: list[str], stop: threading.Event) -> None:
    with redis_server.client().monitor() as monitor:
        for command in monitor.listen():
            seen.append(str(command["command"]).split(" ", 1)[0].upper())
            if stop.is_set():
                return


def test_delivery_and_ack_keep_the_unacked_copy_without_multi_exec(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    seen: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_monitor, args=(redis_server, seen, stop), daemon=True)
    watcher.start()
    time.sleep(0.2)
    with Connection(redis_server.url) as conn:
        queue = conn.SimpleQueue("acks-test")
        queue.put({"n": 1})
        message = queue.get(timeout=2)
        # While unacked, the message is kept in the unacked hash and its index
        assert client.hlen("unacked") == 1
        assert client.zcard("unacked_index") == 1
        message.ack()
        assert client.hlen("unacked") == 0
        assert client.zcard("unacked_index") == 0
        queue.close()
    stop.set()
    client.ping()
    watcher.join(timeout=2)
    # Then from delivery (BRPOP) on: index + hash written, then removed, no MULTI/EXEC
    # (the MULTIs before it are the queue's declaration, once per consumer)
    after_delivery = seen[seen.index("BRPOP") :]
    assert {"ZADD", "HSET", "ZREM", "HDEL"} <= set(after_delivery)
    assert "MULTI" not in after_delivery and "EXEC" not in after_delivery


def test_a_message_taken_but_never_acked_is_delivered_again(redis_server: RedisServer) -> None:
    with Connection(redis_server.url) as conn:
        queue = conn.SimpleQueue("redeliver-test")
        queue.put({"n": 2})
        queue.get(timeout=2)  # taken, never acked: the channel closes with it unacked
        queue.close()
    with Connection(redis_server.url) as conn:
        queue = conn.SimpleQueue("redeliver-test")
        message = queue.get(timeout=2)
        assert message.payload == {"n": 2}
        message.ack()
        queue.close()
    assert redis_server.client().hlen("unacked") == 0
