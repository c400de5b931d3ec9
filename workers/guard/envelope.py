"""Is this item of a Redis queue list a kombu envelope? A pure check, run before kombu's.

kombu's Redis transport keeps each message on the queue's list as JSON text, an
*envelope*: ``{"body", "headers", "content-type", "content-encoding", "properties":
{"delivery_tag", "delivery_info": {"exchange", "routing_key"}, "body_encoding", ...}}``.
The transport decodes it, builds a ``Message`` and books it as unacked *before* Celery's
consumer — and so before :func:`workers.guard.inspect.inspect_message` — sees anything.
Any item that is not JSON, or JSON of another shape, raises there and ends the worker
(``redis-cli LPUSH poll "not json"`` was enough). :func:`decode_item` answers either the
envelope, safe for kombu to take, or a :class:`~workers.guard.inspect.Refusal`; the
transport patch (``workers/guard/redis_transport.py``) dead-letters the latter.

What is checked is what kombu itself reads without a guard (``virtual.Message``,
``redis.QoS.append``); everything about the message inside (headers' values, the body's
JSON, content type, size) stays the consumer guard's job. Never raises.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from nanobanana_queue.workers.guard.inspect import Refusal
from nanobanana_queue.workers.visible import visible

#: At most this many bytes of a refused item are kept in its dead letter (then escaped).
MAX_EXCERPT_BYTES: Final = 2048
#: kombu's own delivery tags are uuid4 strings; a longer one is not from kombu.
MAX_DELIVERY_TAG_CHARS: Final = 255
#: Body codecs kombu's Redis channel knows besides utf-8 (``virtual.Channel.codecs``).
BODY_CODECS: Final = ("base64",)


def escaped_excerpt(raw: bytes | str, limit: int = MAX_EXCERPT_BYTES) -> str:
    """The first ``limit`` bytes as one line of text: invalid UTF-8 as ``\\xNN``, control
    and bidi characters escaped by :func:`workers.visible.visible` (the one rule for what
    reaches a terminal or a log). Evidence for an operator, not a replayable copy."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    text = visible(data[:limit].decode("utf-8", "backslashreplace"))
    return text + (f"…({len(data)} bytes)" if len(data) > limit else "")


def decode_item(item: bytes | str) -> dict[str, Any] | Refusal:
    """The envelope in a list item, decoded as kombu decodes it; or why kombu cannot take it."""
    try:
        payload = loads(bytes_to_str(item))  # type: ignore[no-untyped-call]
    except Exception as exc:  # JSONDecodeError, RecursionError, a failing type marker...
        return Refusal("undecodable", f"broker envelope is not JSON: {type(exc).__name__}")
    refusal = check_envelope(payload)
    return payload if refusal is None else refusal


def check_unacked_entry(raw: bytes | str) -> Refusal | None:
    """None for an entry of kombu's ``unacked`` hash it can restore: JSON text of
    ``[envelope, exchange, routing_key]`` (``redis.QoS.append``); else why not."""
    try:
        entry = loads(bytes_to_str(raw))  # type: ignore[no-untyped-call]
    except Exception as exc:
        return Refusal("undecodable", f"unacked entry is not JSON: {type(exc).__name__}")
    if not (
        isinstance(entry, list) and len(entry) == 3 and all(isinstance(v, str) for v in entry[1:])
    ):
        return Refusal("bad_envelope", "unacked entry is not [envelope, exchange, routing_key]")
    return check_envelope(entry[0])


def check_envelope(payload: object) -> Refusal | None:
    """None when kombu can build a message from ``payload`` and book it; else why not."""
    try:
        problem = _shape(payload)
    except Exception as exc:  # a check that breaks refuses, it never passes an envelope
        return Refusal("bad_envelope", f"envelope check failed: {type(exc).__name__}")
    if problem is not None:
        return Refusal("bad_envelope", problem)
    return _body(payload)  # type: ignore[arg-type]  # _shape checked it is a dict


def _optional_str(envelope: dict[str, Any], key: str) -> str | None:
    value = envelope.get(key)
    return None if value is None or isinstance(value, str) else f"{key} must be a string"


def _shape(payload: object) -> str | None:
    if not isinstance(payload, dict):
        return f"envelope must be a JSON object, not {type(payload).__name__}"
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return "envelope without a properties object"
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not 0 < len(tag) <= MAX_DELIVERY_TAG_CHARS:
        return f"delivery_tag must be a string of 1-{MAX_DELIVERY_TAG_CHARS} characters"
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not all(
        isinstance(info.get(key), str) for key in ("exchange", "routing_key")
    ):
        return "delivery_info must hold an exchange and a routing_key (strings)"
    headers = payload.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return "headers must be an object"
    return (
        _optional_str(payload, "content-type")
        or _optional_str(payload, "content-encoding")
        or _optional_str(properties, "body_encoding")
    )


def _body(envelope: dict[str, Any]) -> Refusal | None:
    """The body decodes with its declared encoding, exactly as ``Channel.decode_body`` will
    (utf-8 in any case passes through; otherwise a codec kombu knows, by its exact name)."""
    body = envelope.get("body")
    encoding = envelope["properties"].get("body_encoding")
    if encoding and encoding.lower() != "utf-8" and encoding not in BODY_CODECS:
        return Refusal("undecodable", f"unknown body_encoding {encoding[:40]!r}")
    if not body:  # kombu decodes only a non-empty body
        return None
    if not isinstance(body, str):
        return Refusal("undecodable", f"body must be a string, not {type(body).__name__}")
    if encoding in BODY_CODECS:
        try:
            base64.b64decode(body)  # kombu's Base64 codec: lenient, but padding must fit
        except (binascii.Error, ValueError) as exc:
            return Refusal("undecodable", f"body is not base64: {str(exc)[:80]}")
    return None
