"""The dead-letter store: refused broker messages, kept in the job store's Redis.

In Redis (``NBQ_REDIS_URL``), not in a broker queue, so it works the same with any
broker and a refused message can never be re-consumed by accident.

Bounded three ways, so a flood of poison messages cannot eat the job store's memory
(production Redis runs ``noeviction``):

* ``NBQ_DEAD_LETTER_MAX`` letters and ``NBQ_DEAD_LETTER_MAX_BYTES`` bytes, counted on the
  JSON as stored (after escaping: a control byte costs six) plus :data:`OVERHEAD_BYTES`
  per letter. Over a bound, the oldest letter of the reason with the most letters goes,
  except the first :data:`FIRSTS_PER_REASON` of each reason (pinned, using at most half
  of each bound): a flood drops its own letters, never the first evidence, and the
  newest of every reason stay. Each letter dropped so is counted
  (``nbq_dead_letters_dropped_total``, ``nbq dead list``'s header).
* ``NBQ_DEAD_LETTER_RETENTION_S`` seconds.
* Each letter holds the raw message with the body and headers cut to
  :data:`MAX_BODY_CHARS` / :data:`MAX_HEADERS_CHARS` *as stored* and redacted
  (workers/logs.py).

Keys (one hash tag, so a Redis Cluster keeps them in one slot): ``{<prefix>:dead}:``
``entries`` (hash id -> JSON), ``index`` (zset by time) and the bookkeeping of the bounds
(``meta``, ``tags``, ``byreason``, ``counts``, ``firsts``), written by scripts next to
this module (``deadletter_common.lua``, ``deadletter_add.lua``, ``deadletter_purge.lua``)
whose headers document their KEYS and ARGV.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Final

import redis
from pydantic import BaseModel

from nanobanana_queue.workers.logs import redact_text
from nanobanana_queue.workers.redis_client import redis_client
from nanobanana_queue.workers.visible import visible

#: Longest body kept, in bytes of the stored JSON (a ``\x01`` costs 6, ``a`` costs 1).
MAX_BODY_CHARS: Final = 16 * 1024
#: Longest headers text kept, in bytes of the stored JSON.
MAX_HEADERS_CHARS: Final = 4 * 1024
#: Bytes counted per letter besides its JSON: its id three times, the index and tag
#: entries and Redis's per-field overhead (measured: tests/workers/test_deadletters.py).
OVERHEAD_BYTES: Final = 640
#: The first letters of each reason kept while the bounds drop others (the evidence).
FIRSTS_PER_REASON: Final = 5


def _script(name: str) -> str:
    """A Lua script shipped next to this module (its header documents KEYS and ARGV)."""
    return files("nanobanana_queue.workers").joinpath(name).read_text(encoding="utf-8")


#: The bookkeeping both scripts share (prepended to each).
COMMON_LUA: Final = _script("deadletter_common.lua")
#: Stores one letter and keeps the store bounded (``add``).
ADD_LUA: Final = COMMON_LUA + _script("deadletter_add.lua")
#: Removes the letters refused up to a time, or one letter (``purge``, ``remove``).
PURGE_LUA: Final = COMMON_LUA + _script("deadletter_purge.lua")


class DeadLetter(BaseModel):
    """One refused message, as ``nbq dead show`` prints it."""

    id: str
    at: float
    queue: str
    reason: str
    detail: str
    hostname: str
    task: str | None = None
    message_id: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    headers: str  # JSON text of the message headers (capped, redacted)
    body: str  # the raw body (capped, redacted)
    body_bytes: int
    body_truncated: bool = False
    headers_truncated: bool = False
    redacted: bool = False


def stored_len(text: str) -> int:
    """Bytes ``text`` takes inside the stored JSON (pydantic writes UTF-8 and ``\\u00XX``)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")) - 2


def _cap(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut so that it takes at most ``limit`` bytes once stored as JSON (control
    bytes and quotes count for their escapes), plus ``…(N chars)``."""
    if stored_len(text) <= limit:
        return text, False
    low, high = 0, min(len(text), limit)  # the longest prefix that fits: in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if stored_len(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return f"{text[:low]}…({len(text)} chars)", True


def _headers_text(headers: object) -> str:
    try:
        return json.dumps(headers, default=repr, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return repr(headers)[: MAX_HEADERS_CHARS * 2]


def build_letter(
    *,
    queue: str,
    reason: str,
    detail: str,
    hostname: str,
    headers: object,
    body: object,
    content_type: object,
    content_encoding: object,
    at: float | None = None,
) -> DeadLetter:
    """A dead letter from a raw message: capped, redacted, never raising on odd types."""
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        body_text = raw[: MAX_BODY_CHARS * 4].decode("utf-8", "backslashreplace")
        size = len(raw)
    else:
        body_text = body if isinstance(body, str) else repr(body)
        size = len(body_text.encode("utf-8", "surrogatepass"))
    body_capped, body_cut = _cap(body_text, MAX_BODY_CHARS)
    body_safe = redact_text(body_capped)
    headers_capped, headers_cut = _cap(_headers_text(headers), MAX_HEADERS_CHARS)
    headers_safe = redact_text(headers_capped)
    task = headers.get("task") if isinstance(headers, dict) else None
    message_id = headers.get("id") if isinstance(headers, dict) else None
    return DeadLetter(
        id=uuid.uuid4().hex,
        at=time.time() if at is None else at,
        queue=str(queue)[:200],
        reason=visible(reason)[:64],
        detail=redact_text(str(detail)[:500]),
        hostname=str(hostname)[:200],
        task=redact_text(task[:200]) if isinstance(task, str) else None,
        message_id=redact_text(message_id[:255]) if isinstance(message_id, str) else None,
        content_type=str(content_type)[:100] if content_type is not None else None,
        content_encoding=str(content_encoding)[:100] if content_encoding is not None else None,
        headers=headers_safe,
        body=body_safe,
        body_bytes=size,
        body_truncated=body_cut,
        headers_truncated=headers_cut,
        redacted=body_safe != body_capped or headers_safe != headers_capped,
    )


@dataclass(frozen=True)
class DeadLetterStats:
    """What ``nbq dead list`` prints above its table."""

    count: int
    bytes: int  # counted as the bound counts them (stored JSON + overhead per letter)
    dropped: int  # letters removed by the bounds since the store began (never reset)
    pinned: int  # first letters of their reason, kept while the bounds drop others
    max_entries: int
    max_bytes: int


class DeadLetterStore:
    """Add, list, show, remove and purge dead letters (bounded, see the module doc)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        max_entries: int,
        retention_s: float,
        max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.redis = client
        tag = f"{{{prefix}:dead}}"
        self.entries_key = f"{tag}:entries"
        self.index_key = f"{tag}:index"
        self.meta_key = f"{tag}:meta"
        self.keys = [
            self.entries_key,
            self.index_key,
            self.meta_key,
            f"{tag}:tags",
            f"{tag}:byreason",
            f"{tag}:counts",
            f"{tag}:firsts",
        ]
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.retention_s = retention_s
        self._add = client.register_script(ADD_LUA)
        self._purge = client.register_script(PURGE_LUA)

    @classmethod
    def from_settings(cls, settings: Any, client: redis.Redis | None = None) -> DeadLetterStore:
        return cls(
            client or redis_client(settings, settings.job_store_url, socket_timeout=10),
            prefix=settings.key_prefix,
            max_entries=settings.dead_letter_max,
            max_bytes=settings.dead_letter_max_bytes,
            retention_s=settings.dead_letter_retention_s,
        )

    def add(self, letter: DeadLetter) -> str:
        """Store ``letter``; returns its id (:meth:`put` also says what was dropped)."""
        self.put(letter)
        return letter.id

    def put(self, letter: DeadLetter) -> int:
        """Store ``letter``; returns how many letters the bounds dropped to make room."""
        _aged, dropped = self._add(
            keys=self.keys,
            args=[
                OVERHEAD_BYTES,
                letter.id,
                repr(letter.at),
                f"{letter.at:020.6f}",
                letter.reason,
                letter.model_dump_json(),
                repr(time.time() - self.retention_s),
                self.max_entries,
                self.max_bytes,
                FIRSTS_PER_REASON,
            ],
        )
        return int(dropped)

    def stats(self) -> DeadLetterStats:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.index_key)
        pipe.hmget(self.meta_key, ["bytes", "dropped", "pinned"])
        count, (size, dropped, pinned) = pipe.execute()
        return DeadLetterStats(
            count=int(count),
            bytes=int(size or 0),
            dropped=int(dropped or 0),
            pinned=int(pinned or 0),
            max_entries=self.max_entries,
            max_bytes=self.max_bytes,
        )

    def get(self, letter_id: str) -> DeadLetter | None:
        raw = self.redis.hget(self.entries_key, letter_id)
        return DeadLetter.model_validate_json(raw) if raw else None

    def list(self, *, reason: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Newest first; ``reason`` filters (scanning at most the whole bounded index)."""
        found: list[DeadLetter] = []
        start, page = 0, 500
        cutoff = time.time() - self.retention_s
        while len(found) < limit:
            ids = self.redis.zrevrangebyscore(
                self.index_key, "+inf", repr(cutoff), start=start, num=page
            )
            if not ids:
                break
            start += len(ids)
            for raw in self.redis.hmget(self.entries_key, list(ids)):  # type: ignore[arg-type]
                if not raw:
                    continue
                letter = DeadLetter.model_validate_json(raw)
                if reason is None or letter.reason == reason:
                    found.append(letter)
                    if len(found) >= limit:
                        break
        return found

    def count(self, *, older_than_s: float | None = None) -> int:
        """All entries, or those ``purge(older_than_s=...)`` would remove."""
        if older_than_s is None:
            return int(self.redis.zcard(self.index_key))
        return int(self.redis.zcount(self.index_key, "-inf", repr(time.time() - older_than_s)))

    def remove(self, letter_id: str) -> bool:
        return bool(self._purge(keys=self.keys, args=[OVERHEAD_BYTES, "0", letter_id]))

    def purge(self, *, older_than_s: float = 0.0) -> int:
        """Remove every entry older than ``older_than_s`` seconds (0: all of them)."""
        cutoff = time.time() - older_than_s
        return int(self._purge(keys=self.keys, args=[OVERHEAD_BYTES, repr(cutoff), ""]))


class ReplayOutcome(BaseModel):
    queue: str = ""
    message_id: str = ""
    refusal: Any = None  # workers.guard.inspect.Refusal when not replayed


def replay_letter(settings: Any, letter: DeadLetter) -> ReplayOutcome:
    """Re-check a dead letter as the guard would and publish it again to its queue.

    It runs now: ``eta`` and ``expires`` are dropped, and it gets a fresh message id.
    A letter whose body or headers were cut or redacted cannot be replayed faithfully,
    so it is refused (nothing published).
    """
    from kombu.connection import Connection
    from kombu.messaging import Producer as KombuProducer

    from nanobanana_queue.workers.contract import TASK_QUEUES
    from nanobanana_queue.workers.guard.inspect import Limits, Refusal, inspect_message

    if letter.body_truncated or letter.headers_truncated or letter.redacted:
        return ReplayOutcome(
            refusal=Refusal("not_replayable", "the stored copy was cut or redacted")
        )
    try:
        headers = json.loads(letter.headers)
    except ValueError:
        headers = None
    if not isinstance(headers, dict):
        return ReplayOutcome(refusal=Refusal("not_a_task", "headers are not an object"))
    headers = {k: v for k, v in headers.items() if k not in ("eta", "expires")}
    headers["id"] = uuid.uuid4().hex
    refusal = inspect_message(
        headers=headers,
        body=letter.body,
        content_type=letter.content_type,
        content_encoding=letter.content_encoding,
        now=time.time(),
        limits=Limits(
            max_message_bytes=settings.max_message_bytes,
            max_countdown_s=settings.max_countdown_s,
        ),
    )
    if refusal is not None:
        return ReplayOutcome(refusal=refusal)
    queue = TASK_QUEUES.get(str(headers["task"]), letter.queue)
    with Connection(settings.broker_url) as conn:  # type: ignore[no-untyped-call]
        KombuProducer(conn.channel()).publish(  # type: ignore[no-untyped-call]
            letter.body,
            routing_key=queue,
            exchange="",
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
        )
    return ReplayOutcome(queue=queue, message_id=headers["id"])
