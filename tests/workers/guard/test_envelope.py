"""The envelope check (workers/guard/envelope.py): kombu's own envelopes pass, every raw
item kombu cannot take is refused, and an excerpt never carries a raw control byte."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.connection import Connection
from kombu.transport.virtual import Message
from kombu.utils.json import dumps

import nanobanana_queue.workers.tasks  # noqa: F401 - registers the nbq.* tasks on the app
from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.guard.envelope import (
    MAX_EXCERPT_BYTES,
    check_envelope,
    check_unacked_entry,
    decode_item,
    escaped_excerpt,
)
from nanobanana_queue.workers.guard.inspect import REASONS, Refusal
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.visible import is_visible
from tests.support.raw_envelopes import SHAPES, RawShape
from tests.support.redis_server import RedisServer

ENVELOPE_REASONS = ("undecodable", "bad_envelope")


def test_every_envelope_kombu_and_celery_write_passes(redis_server: RedisServer) -> None:
    # Given our own task messages (with a priority and a countdown) and a plain kombu one
    app = create_app(Settings(broker_url=redis_server.url))
    app.send_task("nbq.submit", kwargs={"job_id": "a"}, queue="submit")
    app.send_task("nbq.poll", kwargs={"job_id": "a", "token": "t"}, queue="poll", countdown=5)
    app.send_task("nbq.download", kwargs={"job_id": "a"}, queue="download", priority=3)
    with Connection(redis_server.url) as conn:
        conn.SimpleQueue("poll").put({"x": 1}, headers={"h": "v"})
    # When each item on the lists is checked
    client = redis_server.client()
    items = [i for key in client.keys("*") if client.type(key) == b"list"
             for i in client.lrange(key, 0, -1)]  # fmt: skip
    # Then every one is an envelope
    assert len(items) == 4
    assert all(isinstance(decode_item(item), dict) for item in items)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_a_raw_item_is_refused_with_its_reason_or_left_to_the_consumer_guard(
    shape: RawShape,
) -> None:
    result = decode_item(shape.raw)
    if shape.reason in ENVELOPE_REASONS:
        assert isinstance(result, Refusal)
        assert (result.reason, result.reason in REASONS) == (shape.reason, True)
        assert len(result.detail) <= 200
    else:  # a well-formed envelope: what is inside is the consumer guard's to judge
        assert isinstance(result, dict)


class _Channel:
    """What ``virtual.Message`` asks of a channel: kombu's own body codecs."""

    from kombu.transport.virtual import Channel as _Virtual

    codecs = _Virtual.codecs
    decode_body = _Virtual.decode_body


GOOD: dict[str, Any] = json.loads(
    next(s.raw for s in SHAPES if s.name == "a well-formed envelope of an unknown task")
)
KOMBU_MARKERS = st.sampled_from(
    [
        {"__type__": "datetime", "__value__": "2020-01-01T00:00:00"},
        {"__type__": "uuid", "__value__": "6b1c5a4e-0000-4000-8000-000000000001"},
        {"__type__": "bytes", "__value__": "eA=="},
        {"__type__": "decimal", "__value__": "1.5"},
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | KOMBU_MARKERS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                        children, max_size=3),
    max_leaves=6,
)  # fmt: skip
PLACES = st.sampled_from(
    [
        ("body",),
        ("headers",),
        ("content-type",),
        ("content-encoding",),
        ("properties",),
        ("properties", "delivery_tag"),
        ("properties", "delivery_info"),
        ("properties", "delivery_info", "exchange"),
        ("properties", "delivery_info", "routing_key"),
        ("properties", "body_encoding"),
    ]
)


DROP = object()  # the key is removed


def _mutated(changes: list[tuple[tuple[str, ...], Any]]) -> Any:
    envelope = json.loads(json.dumps(GOOD))
    for path, value in changes:
        target = envelope
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict) and value is DROP:
            target.pop(path[-1], None)
        elif isinstance(target, dict):
            target[path[-1]] = value
    return envelope


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(PLACES, JSON | st.just(DROP)), min_size=1, max_size=3))
def test_an_envelope_that_passes_is_one_kombu_can_build_and_book(
    changes: list[tuple[tuple[str, ...], Any]],
) -> None:
    envelope = _mutated(changes)
    if check_envelope(envelope) is not None:
        return
    # What virtual.Channel's consume callback and redis.QoS.append do with it
    message = Message(envelope, channel=_Channel())
    delivery = message.delivery_info
    dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
    assert isinstance(message.delivery_tag, str)


@given(raw=st.binary(max_size=256) | JSON.map(json.dumps).map(str.encode))
def test_decoding_any_item_never_raises(raw: bytes) -> None:
    result = decode_item(raw)
    assert isinstance(result, dict) or result.reason in ENVELOPE_REASONS


@given(raw=st.binary(max_size=3 * MAX_EXCERPT_BYTES) | st.text(max_size=MAX_EXCERPT_BYTES))
def test_an_excerpt_is_bounded_and_carries_no_raw_control_character(raw: bytes | str) -> None:
    excerpt = escaped_excerpt(raw)
    assert is_visible(excerpt)
    assert len(excerpt) <= 4 * MAX_EXCERPT_BYTES + 32


def test_an_excerpt_shows_what_was_escaped() -> None:
    raw = b"\x1b[2J\xff ok" + "\u202e".encode()
    assert escaped_excerpt(raw) == "\\x1b[2J\\xff ok\\u202e"
    assert escaped_excerpt(b"A" * (MAX_EXCERPT_BYTES + 1)).endswith(
        f"…({MAX_EXCERPT_BYTES + 1} bytes)"
    )


def test_a_base64_body_is_checked_as_kombu_decodes_it() -> None:
    lenient = {**GOOD, "body": base64.b64encode(b"[[], {}, {}]").decode() + "\n"}
    assert check_envelope(lenient) is None  # kombu's decoder skips the newline too
    unknown = {**GOOD, "properties": {**GOOD["properties"], "body_encoding": "BASE64"}}
    assert check_envelope(unknown) == Refusal("undecodable", "unknown body_encoding 'BASE64'")


def test_an_unacked_entry_kombu_wrote_passes_and_others_are_refused(
    redis_server: RedisServer,
) -> None:
    with Connection(redis_server.url) as conn:
        conn.SimpleQueue("poll").put({"x": 1})
        conn.SimpleQueue("poll").get(timeout=5)  # taken, never acked: booked in unacked
        (entry,) = redis_server.client().hvals("unacked")  # (a close puts it back)
    assert check_unacked_entry(entry) is None
    assert check_unacked_entry(b"[") == Refusal(
        "undecodable", "unacked entry is not JSON: JSONDecodeError"
    )
    assert check_unacked_entry(b'[{}, "", "poll"]').reason == "bad_envelope"  # type: ignore[union-attr]
    assert check_unacked_entry(b'[{}, "", 5]').reason == "bad_envelope"  # type: ignore[union-attr]
