"""kombu's Redis transport, guarded: a list item that is not a usable envelope is a dead letter.

The consumer guard (``workers/guard/consumer.py``) sees kombu ``Message`` objects; an
item of a queue list becomes one only after kombu's Redis channel has decoded its JSON
envelope, built the message and booked it as unacked. Each of those steps raised on a
hostile item, in the consumer's event loop, and the worker exited (``redis-cli LPUSH
poll "not json"``: a threads worker exited 0.9 s later, a prefork one 1.8 s; the pop had
already taken the item, so a restarted worker carried on — until the next one). Three
replacements, installed once per process by :func:`install` (``workers/startup.py``'s
``patch_kombu``):

- ``Channel._brpop_read``: kombu's own (5.5–5.7), with one line changed — the item is
  decoded by :func:`workers.guard.envelope.decode_item`, and an item that is not an
  envelope is dead-lettered with the queue it was popped from instead of raising.
  :data:`KOMBU_BRPOP_READ_SHA256` pins the kombu sources this copy was taken from; a
  test fails when kombu changes the method, so the copy is re-checked, never stale.
- ``QoS.restore_by_tag``: an entry of the ``unacked`` hash that is not kombu's own
  ``[envelope, exchange, routing_key]`` ended every worker at start (a crash loop); it is
  now dead-lettered and removed first (:func:`_restore_by_tag`).
- ``Transport._deliver`` (every path a decoded envelope takes to a consumer: BRPOP,
  ``basic_get`` drains, fanout/pub-sub such as Celery's pidbox): the envelope's shape is
  checked before kombu builds a message from it. An envelope that passes is one kombu
  can build and book (a hypothesis test holds the check to that); from there on the
  consumer owns the message and its errors — in a worker, the consumer guard.

What is dead-lettered is bounded and escaped (:func:`~workers.guard.envelope.escaped_excerpt`);
reasons ``undecodable`` and ``bad_envelope``, counted in ``nbq_dead_letters_total``. A
broker connection error still propagates (kombu reconnects on those).
"""

from __future__ import annotations

import json
import threading
from queue import Empty
from typing import Any, Final, Protocol

from nanobanana_queue.workers.deadletters import DeadLetter, build_letter
from nanobanana_queue.workers.guard.envelope import (
    MAX_EXCERPT_BYTES,
    check_envelope,
    check_unacked_entry,
    decode_item,
    escaped_excerpt,
)
from nanobanana_queue.workers.guard.inspect import Refusal
from nanobanana_queue.workers.logs import get_logger

log = get_logger("nbq.guard")

#: sha256 of ``inspect.getsource(kombu.transport.redis.Channel._brpop_read)`` in the kombu
#: releases :func:`_brpop_read` was copied from (5.5.0–5.6.x; 5.7.0 added the re-auth flush).
KOMBU_BRPOP_READ_SHA256: Final = frozenset(
    {
        "9a9f7f5a6ad96f489d92b73bbca160faf840e55c12405e58d89b33393787c92a",  # 5.5.0-5.6.2
        "c42518699709f2df90f55a048fe6346612ae5527e5c4a6819f2c0920dc62088f",  # 5.7.0
    }
)


class Letterer(Protocol):
    """Who records a letter (``workers.guard.consumer.DeadLetterer``; a stub in tests)."""

    hostname: str

    def record(self, letter: DeadLetter) -> None: ...


_letterer_lock = threading.Lock()
_letterer: Letterer | None = None  # set by the worker's consumer when it starts


def use_letterer(letterer: Letterer | None) -> None:
    """The worker's consumer hands over its dead-letterer (its hostname, its store)."""
    global _letterer
    with _letterer_lock:
        _letterer = letterer


def _current_letterer() -> Letterer | None:
    with _letterer_lock:
        return _letterer


def quarantine(queue: str, raw: bytes | str, refusal: Refusal) -> None:
    """Dead-letter an item kombu cannot take: an escaped excerpt, its size, the reason.

    In a process that is not a worker (no dead-letterer handed over: a producer or an
    ``nbq`` command waiting for replies) it is only logged: such a process's settings
    need not name the workers' store. Never raises: it runs in the consumer's event
    loop, where an exception ends the process.
    """
    try:
        size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
        letterer = _current_letterer()
        if letterer is None:
            log.warning(
                "raw_item_dropped",
                queue=queue,
                reason=refusal.reason,
                detail=refusal.detail,
                body_bytes=size,
            )
            return
        letter = build_letter(
            queue=queue,
            reason=refusal.reason,
            detail=refusal.detail,
            hostname=letterer.hostname,
            headers=None,
            body=escaped_excerpt(raw),
            content_type=None,
            content_encoding=None,
        )
        letterer.record(
            letter.model_copy(
                update={"body_bytes": size, "body_truncated": size > MAX_EXCERPT_BYTES}
            )
        )
    except Exception as exc:
        log.error("dead_letter_failed", error=type(exc).__name__, reason=refusal.reason)


def _envelope_text(payload: object) -> str:
    """A decoded envelope back as JSON text, for its excerpt (never raises)."""
    try:
        return json.dumps(payload, default=repr)[: MAX_EXCERPT_BYTES * 2]
    except (TypeError, ValueError, RecursionError):
        return repr(payload)[: MAX_EXCERPT_BYTES * 2]


def _brpop_read(self: Any, **options: Any) -> bool:
    """kombu's ``Channel._brpop_read``; only the decode of ``item`` differs (marked)."""
    from kombu.utils.encoding import bytes_to_str

    try:
        try:
            dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
        except self.connection_errors:
            # if there's a ConnectionError, disconnect so the next
            # iteration will reconnect automatically.
            self.client.connection.disconnect()
            raise
        if dest__item:
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]  # type: ignore[no-untyped-call]
            self._queue_cycle.rotate(dest)
            # nbq: was ``self.connection._deliver(loads(bytes_to_str(item)), dest)``
            envelope = decode_item(item)
            if isinstance(envelope, Refusal):
                quarantine(dest, item, envelope)
            else:
                self.connection._deliver(envelope, dest)
            return True
        raise Empty()
    finally:
        self._in_poll = None
        # kombu 5.7: the BRPOP connection is idle now, the moment to flush a pending
        # streaming re-auth token (absent before 5.7).
        flush = getattr(self, "_flush_brpop_reauth", None)
        if flush is not None:
            flush()


def _restore_by_tag(original: Any) -> Any:
    """``QoS.restore_by_tag`` that first takes out an ``unacked`` entry kombu cannot restore.

    kombu restores the ``unacked`` entries older than the visibility timeout when a
    consumer starts (``on_poll_init``) and then every few seconds; it decodes each as
    ``[envelope, exchange, routing_key]`` inside a transaction, and a hostile entry raised
    there before the transaction's EXEC: the worker ended at start, and every restarted
    one with it (the entry stayed). Checked first (one HGET; restores are rare), such an
    entry is dead-lettered (queue: the hash's name) and removed from the hash and its
    index by a worker; another process (a producer, an ``nbq`` command: its drain runs
    the same restore) skips it and leaves it for a worker. Any other error still
    propagates, so no real message is ever dropped by it.
    """

    def restore_by_tag(self: Any, tag: Any, client: Any = None, leftmost: bool = False) -> Any:
        with self.channel.conn_or_acquire(client) as conn:
            raw = conn.hget(self.unacked_key, tag)
            refusal = check_unacked_entry(raw) if raw else None
            if refusal is None:
                return original(self, tag, client=client, leftmost=leftmost)
            if _current_letterer() is None:  # not a worker: leave it to one, unchanged
                log.warning("unacked_entry_skipped", reason=refusal.reason, detail=refusal.detail)
                return None
            self._remove_from_indices(tag).execute()
        quarantine(str(self.unacked_key), raw, refusal)
        return None

    restore_by_tag.nbq_patched = True  # type: ignore[attr-defined]
    return restore_by_tag


def install() -> None:
    """Replace the three methods of kombu's Redis transport (idempotent)."""
    from kombu.transport import redis as kombu_redis

    if getattr(kombu_redis.Channel._brpop_read, "nbq_patched", False):
        return
    original_deliver = kombu_redis.Transport._deliver

    def _deliver(self: Any, message: Any, queue: Any) -> Any:
        refusal = check_envelope(message)
        if refusal is not None:
            quarantine(str(queue), _envelope_text(message), refusal)
            return None
        return original_deliver(self, message, queue)  # type: ignore[no-untyped-call]

    _brpop_read.nbq_patched = True  # type: ignore[attr-defined]
    _deliver.nbq_patched = True  # type: ignore[attr-defined]
    kombu_redis.Channel._brpop_read = _brpop_read  # type: ignore[method-assign]
    kombu_redis.Transport._deliver = _deliver  # type: ignore[method-assign]
    kombu_redis.QoS.restore_by_tag = _restore_by_tag(  # type: ignore[method-assign]
        kombu_redis.QoS.restore_by_tag
    )
