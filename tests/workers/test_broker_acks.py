"""kombu's ack emulation on Redis with the worker's plain-pipeline bookkeeping
(``patch_kombu``): the same unacked copy and redelivery. What it saves, MULTI/EXEC around
each delivery and ack, is benchmarks/redis_commands.py's to report."""

from __future__ import annotations

from kombu.connection import Connection

from nanobanana_queue.workers.startup import patch_kombu
from tests.support.redis_server import RedisServer

patch_kombu()  # what a worker does at start: the plain-pipeline bookkeeping


def test_delivery_keeps_an_unacked_copy_until_the_ack(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with Connection(redis_server.url) as conn:
        queue = conn.SimpleQueue("acks-test")
        queue.put({"n": 1})
        message = queue.get(timeout=2)
        # While unacked, the message is kept in the unacked hash and its index
        assert client.hlen("unacked") == 1
        assert client.zcard("unacked_index") == 1
        message.ack()
        # And the ack removes both
        assert client.hlen("unacked") == 0
        assert client.zcard("unacked_index") == 0
        queue.close()


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
