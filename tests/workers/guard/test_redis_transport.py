"""kombu's Redis transport, guarded (workers/guard/redis_transport.py), in process.

A kombu consumer on a real redis-server drains raw items pushed with a plain redis
client: none raises, each lands with the dead-letterer with its queue and reason, and
the good message behind them is delivered. The copied ``_brpop_read`` is pinned to the
kombu sources it was copied from.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer
from kombu.messaging import Producer as KombuProducer
from kombu.transport import redis as kombu_redis

from nanobanana_queue.workers.deadletters import DeadLetter
from nanobanana_queue.workers.guard import redis_transport
from nanobanana_queue.workers.startup import patch_kombu
from tests.support.procs import wait_until
from tests.support.raw_envelopes import SHAPES, UNACKED_POISON
from tests.support.redis_server import RedisServer

ENVELOPE_REASONS = ("undecodable", "bad_envelope")


class Recorder:
    """Stands in for the worker's ``DeadLetterer``: keeps the letters it is given."""

    hostname = "rec@test"

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def record(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    patch_kombu()
    rec = Recorder()
    redis_transport.use_letterer(rec)
    yield rec
    redis_transport.use_letterer(None)


def _take(received: list[Any], body: Any, message: Any) -> None:
    received.append(body)
    message.ack()


def _kombu_source_sha256(name: str) -> str:
    """sha256 of kombu's own ``Channel.<name>`` as in its file (what our copy started from)."""
    source = Path(inspect.getfile(kombu_redis)).read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == "Channel":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    lines = source.splitlines(keepends=True)[item.lineno - 1 : item.end_lineno]
                    return hashlib.sha256("".join(lines).encode()).hexdigest()
    raise AssertionError(f"kombu's redis Channel has no {name}")


def test_the_copied_brpop_read_is_from_the_installed_kombu() -> None:
    # A failure means kombu changed Channel._brpop_read: compare it with our copy in
    # workers/guard/redis_transport.py, carry the change over, add the new hash.
    assert _kombu_source_sha256("_brpop_read") in redis_transport.KOMBU_BRPOP_READ_SHA256


def test_install_replaces_both_methods_once() -> None:
    patch_kombu()
    patch_kombu()
    assert kombu_redis.Channel._brpop_read is redis_transport._brpop_read
    assert getattr(kombu_redis.Transport._deliver, "nbq_patched", False)


def test_a_consumer_drains_every_raw_shape_and_then_takes_the_good_message(
    redis_server: RedisServer, recorder: Recorder
) -> None:
    # Given every raw shape pushed onto the poll list, then one message kombu published
    client = redis_server.client()
    for shape in SHAPES:
        client.lpush("poll" + shape.list_suffix, shape.raw)
    received: list[Any] = []
    expected = sorted(s.reason for s in SHAPES if s.reason in ENVELOPE_REASONS)
    with Connection(redis_server.url) as conn:
        queue = Queue("poll", Exchange("poll", type="direct"), routing_key="poll")
        KombuProducer(conn.channel()).publish(
            {"good": True}, exchange="", routing_key="poll", declare=[queue]
        )
        # When a kombu consumer drains the queue
        with Consumer(
            conn,
            [queue],
            callbacks=[lambda body, m: _take(received, body, m)],
            on_decode_error=lambda m, exc: _take(received, "not JSON inside", m),
        ):
            wait_until(
                lambda: (
                    _drain(conn)
                    or ({"good": True} in received and len(recorder.letters) == len(expected))
                ),
                timeout_s=30,
                what="the good message and the letters",
            )
    # Then each raw item kombu cannot take is a letter with its queue and reason
    assert sorted(letter.reason for letter in recorder.letters) == expected
    assert {(letter.queue, letter.hostname) for letter in recorder.letters} == {
        ("poll", "rec@test")
    }
    # And the well-formed envelopes reached the consumer (the consumer guard's to judge)
    assert len(received) == 1 + sum(s.reason not in ENVELOPE_REASONS for s in SHAPES)
    # And nothing is left on the lists or held unacked
    assert client.hlen("unacked") == 0
    assert all(client.llen(k) == 0 for k in client.keys("poll*"))


def test_each_letter_keeps_the_size_and_a_bounded_escaped_excerpt(
    redis_server: RedisServer, recorder: Recorder
) -> None:
    raw = b"\x1b]0;PWNED\x07" + b"A" * 10_000
    redis_server.client().lpush("poll", raw)
    with Connection(redis_server.url) as conn, Consumer(conn, [Queue("poll")], callbacks=[]):
        wait_until(lambda: _drain(conn) or bool(recorder.letters), timeout_s=30, what="letter")
    (letter,) = recorder.letters
    assert (letter.reason, letter.body_bytes) == ("undecodable", 10_010)
    assert letter.body_truncated
    assert letter.body.startswith("\\x1b]0;PWNED\\x07AAA") and "\x1b" not in letter.body
    assert len(letter.body) < 2100


def _drain(conn: Connection) -> bool:
    """One round of the consumer's loop (False: never the condition itself)."""
    with contextlib.suppress(TimeoutError):
        conn.drain_events(timeout=0.2)
    return False


def test_a_fanout_message_of_the_wrong_shape_is_a_letter_not_an_error(
    redis_server: RedisServer, recorder: Recorder
) -> None:
    # Given a consumer of a fanout exchange (as Celery's pidbox broadcast is on Redis)
    received: list[Any] = []
    bcast = Exchange("bcast", type="fanout")
    with Connection(redis_server.url) as conn:
        queue = Queue("mine.bcast", bcast)
        with Consumer(conn, [queue], callbacks=[lambda body, m: received.append(body)]):
            client = redis_server.client()
            wait_until(
                lambda: _drain(conn) or client.pubsub_numpat() + len(client.pubsub_channels()) > 0,
                timeout_s=10,
                what="the consumer's subscription",
            )
            channel = conn.default_channel._get_publish_topic("bcast", "")
            # When raw JSON of the wrong shapes is published on its channel, then a good one
            for raw in (b"[]", b"{}", b'{"properties": "x"}'):
                client.publish(channel, raw)
            KombuProducer(conn.channel()).publish({"good": 1}, exchange=bcast)
            wait_until(lambda: _drain(conn) or {"good": 1} in received, timeout_s=30, what="good")
    # Then each wrong shape is a letter of that queue, and the good one arrived
    assert [(letter.queue, letter.reason) for letter in recorder.letters] == [
        ("mine.bcast", "bad_envelope")
    ] * 3
    assert received == [{"good": 1}]


def test_an_unacked_entry_kombu_cannot_restore_is_a_letter_and_a_real_one_is_restored(
    redis_server: RedisServer, recorder: Recorder
) -> None:
    # Given a real message taken and never acked (kombu's own unacked entry), and
    # hostile entries written into the unacked hash, all older than the visibility timeout
    client = redis_server.client()
    with Connection(redis_server.url) as conn:
        conn.SimpleQueue("poll").put({"real": 1})
        taken = conn.SimpleQueue("poll").get(timeout=5)  # booked in unacked, never acked
        assert taken.payload == {"real": 1}
        for tag, raw in UNACKED_POISON.items():
            client.hset("unacked", tag, raw)
        client.zadd("unacked_index", dict.fromkeys([*UNACKED_POISON, taken.delivery_tag], 1.0))
        # When kombu restores what is older than the visibility timeout (as at a start)
        with Connection(redis_server.url) as restorer:
            restorer.default_channel.qos.restore_visible(num=100)
    # Then each hostile entry is a letter named after the hash, and gone from it
    assert sorted((letter.queue, letter.reason) for letter in recorder.letters) == [
        ("unacked", "bad_envelope"),
        ("unacked", "bad_envelope"),
        ("unacked", "undecodable"),
    ]
    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
    # And the real message is back on its queue, nothing lost
    with Connection(redis_server.url) as conn:
        assert conn.SimpleQueue("poll").get(timeout=5).payload == {"real": 1}


def test_a_process_that_is_not_a_worker_drops_nothing_it_cannot_hand_to_a_worker(
    redis_server: RedisServer,
) -> None:
    # Given no dead-letterer (a producer or an nbq command: its settings may name no store)
    patch_kombu()
    redis_transport.use_letterer(None)
    client = redis_server.client()
    for tag, raw in UNACKED_POISON.items():
        client.hset("unacked", tag, raw)
    client.zadd("unacked_index", dict.fromkeys(UNACKED_POISON, 1.0))
    client.lpush("poll", b"not json")
    # When its drain restores old unacked entries and pops a raw item
    with Connection(redis_server.url) as conn, Consumer(conn, [Queue("poll")], callbacks=[]):
        conn.default_channel.qos.restore_visible(num=100)
        wait_until(lambda: _drain(conn) or client.llen("poll") == 0, timeout_s=30, what="pop")
    # Then nothing raised, the unacked entries are left for a worker, unchanged
    assert client.hlen("unacked") == len(UNACKED_POISON)
    assert client.zcard("unacked_index") == len(UNACKED_POISON)
