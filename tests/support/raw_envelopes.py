"""Raw items for a Redis queue list that are not kombu envelopes (or not usable ones).

What ``redis-cli LPUSH poll ...`` can put in front of a worker. Shared by the unit test of
the envelope check (``tests/workers/guard/test_envelope.py``) and the real-process test
(``tests/integration/test_poison_envelopes.py``); ``reason`` is what the dead letter says.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

#: kombu's Redis transport: ``queue`` + this separator + the priority step (``\x06\x163``).
PRIORITY_SEP = "\x06\x16"


@dataclass(frozen=True)
class RawShape:
    name: str
    raw: bytes
    reason: str
    list_suffix: str = ""  # a priority list of the queue, e.g. PRIORITY_SEP + "3"
    #: The queue its dead letter names: the list it was popped from, or for an envelope
    #: that reaches the consumer guard the routing key the envelope claims.
    claimed_queue: str | None = None


def _envelope(**overrides: Any) -> bytes:
    """A kombu envelope as the Redis transport writes it, with ``overrides`` (None drops)."""
    headers = {"lang": "py", "task": "nbq.nope", "id": "raw-1", "retries": 0}
    envelope: dict[str, Any] = {
        "body": base64.b64encode(b'[[], {"job_id": "raw"}, {}]').decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": "poll"},
            "delivery_mode": 2,
            "delivery_tag": "6b1c5a4e-0000-4000-8000-000000000001",
            "priority": 0,
        },
    }
    for key, value in overrides.items():
        target = envelope["properties"] if key in envelope["properties"] else envelope
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return json.dumps(envelope).encode()


SHAPES: list[RawShape] = [
    # not JSON at all: kombu's json loads fails
    RawShape("plain text", b"not json", "undecodable"),
    RawShape("the empty string", b"", "undecodable"),
    RawShape("truncated JSON", b'{"body": "', "undecodable"),
    RawShape("invalid UTF-8 and escapes", b"\xff\xfe\x00\x1b]0;PWNED\x07\x1b[2J", "undecodable"),
    RawShape("nesting deeper than the parser", b"[" * 100_000, "undecodable"),
    RawShape(
        "a kombu type marker that fails",
        b'{"__type__": "decimal", "__value__": "x"}',
        "undecodable",
    ),
    RawShape("5 MB of noise", b"\x1b" + b"A" * 5_000_000, "undecodable"),
    RawShape("not JSON on a priority list", b"not json", "undecodable", PRIORITY_SEP + "3"),
    # JSON, but not an envelope kombu can turn into a message
    RawShape("a JSON string", b'"just a string"', "bad_envelope"),
    RawShape("a number", b"42", "bad_envelope"),
    RawShape("null", b"null", "bad_envelope"),
    RawShape("a bare Celery body", b'[[], {"job_id": "x"}, {}]', "bad_envelope"),
    RawShape("an empty object", b"{}", "bad_envelope"),
    RawShape("no properties", b'{"body": "x"}', "bad_envelope"),
    RawShape("properties a string", b'{"properties": "x"}', "bad_envelope"),
    RawShape("no delivery tag", _envelope(delivery_tag=None), "bad_envelope"),
    RawShape("a delivery tag that is a list", _envelope(delivery_tag=[1]), "bad_envelope"),
    RawShape(
        "a delivery tag that decodes to a datetime",
        _envelope(delivery_tag={"__type__": "datetime", "__value__": "2020-01-01T00:00:00"}),
        "bad_envelope",
    ),
    RawShape("no delivery info", _envelope(delivery_info=None), "bad_envelope"),
    RawShape("delivery info without a routing key", _envelope(delivery_info={}), "bad_envelope"),
    RawShape("headers a list", _envelope(headers=[1, 2]), "bad_envelope"),
    # an envelope whose body cannot be decoded with its declared encoding
    RawShape("a body that is not base64", _envelope(body="abc"), "undecodable"),
    RawShape("an unknown body encoding", _envelope(body_encoding="rot13"), "undecodable"),
    RawShape("a body that is a number", _envelope(body=5), "undecodable"),
    # a well-formed envelope: the consumer guard's own checks refuse it
    RawShape(
        "a well-formed envelope of an unknown task",
        _envelope(),
        "unknown_task",
        claimed_queue="poll",
    ),
    RawShape(
        "a 2 MB well-formed envelope",
        _envelope(
            headers={"task": "nbq.poll", "id": "raw-2"},
            body=base64.b64encode(b"x" * 2_000_000).decode(),
        ),
        "oversized",
        claimed_queue="poll",
    ),
]


#: Entries of kombu's ``unacked`` hash (tag -> raw) it cannot restore: 1 ``undecodable``,
#: 2 ``bad_envelope``. A worker restores old entries when it starts.
UNACKED_POISON = {
    "t-not-json": b"not json",
    "t-not-a-triple": b'{"a": 1}',
    "t-bad-envelope": b'[[1, 2], "", "poll"]',
}
