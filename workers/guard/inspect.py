"""Is this broker message one of ours? A pure check, run before Celery touches it.

Other services enqueue by task name without our code (docs/message-contract.md), so a
queue is an input boundary. Celery builds its ``Request`` from the headers and body
before any task code runs, and several shapes crash that construction (a body that is
not ``[args, kwargs, embed]``, a ``timelimit`` of ``"x"``...), which kills the consumer;
a far-future ETA is held in worker memory until ``worker_eta_task_limit`` stops
fetching. ``inspect_message`` answers a :class:`Refusal` for every such message, so
the consumer (``workers/guard/consumer.py``) can dead-letter it instead.

It never raises, on any input (a hypothesis test feeds it arbitrary bodies/headers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from nanobanana_queue.workers.jobs.ids import (
    JOB_ID_PATTERN,
    InvalidJobIdError,
    is_stored_job_id,
    scoped_job_id,
    validate_producer,
)
from nanobanana_queue.workers.pipeline import PIPELINE
from nanobanana_queue.workers.visible import is_visible

#: Reasons a message is refused (the ``reason`` label of ``nbq_dead_letters_total``).
REASONS: Final = (
    "not_a_task",  # no usable headers / no task name (not a Celery protocol-2 message)
    "unknown_task",  # a task name that is not one of ours
    "content_type",  # not application/json in utf-8
    "oversized",  # body larger than NBQ_MAX_MESSAGE_BYTES
    "undecodable",  # body (or a Redis list item) is not valid JSON text / its encoding
    "body_shape",  # JSON, but not [args, kwargs, embed] as Celery needs
    "bad_header",  # a header Celery reads has the wrong type or value
    "invalid_kwargs",  # arguments that fail the task's contract (job_id, request...)
    "eta_beyond_horizon",  # ETA/countdown further than NBQ_MAX_COUNTDOWN_S
    "expired",  # its ``expires`` has passed
    "celery_refused",  # Celery's own handlers refused it (unknown / invalid / decode)
    "handler_error",  # Celery raised while taking it (defence in depth)
    "bad_envelope",  # a Redis list item that is JSON but not a kombu envelope (guard/envelope.py)
    "unknown_job",  # a stage message for a job that never existed (workers/stages/stray.py)
)

#: Seconds an ETA may lie beyond the horizon: clocks of senders and workers differ.
CLOCK_SKEW_S: Final = 60.0
MAX_ID_CHARS: Final = 255
MAX_TOKEN_CHARS: Final = 128
MAX_NAME_CHARS: Final = 128
MAX_RETRIES: Final = 1_000_000

_STR_OR_NONE_HEADERS: Final = (
    "root_id",
    "parent_id",
    "group",
    "shadow",
    "origin",
    "argsrepr",
    "kwargsrepr",
    "lang",
)
_EMBED_KEYS: Final = ("callbacks", "errbacks", "chain", "chord")


@dataclass(frozen=True)
class Refusal:
    """Why a message is not accepted: a reason from :data:`REASONS` and one line of detail."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int
    max_countdown_s: float


def _job_id(value: object, *, required: bool) -> str | None:
    """A stored job id: ``<id>`` or ``<producer>~<id>`` (workers/jobs/ids.py)."""
    if value is None:
        return "job_id is required" if required else None
    if not is_stored_job_id(value):
        return "job_id must be 1-128 characters of A-Z a-z 0-9 _ . - without '..'"
    return None


def _scoped(name: str, value: object, producer: object) -> str | None:
    """A caller's id for ``producer``: plain, or already in that producer's namespace."""
    if value is None:
        return None
    try:
        if producer is not None:
            validate_producer(producer)  # type: ignore[arg-type]
        if not isinstance(value, str) or (producer is not None and not isinstance(producer, str)):
            raise InvalidJobIdError("not a string")
        scoped_job_id(producer, value)
    except InvalidJobIdError:
        return f"{name} must be 1-128 characters of A-Z a-z 0-9 _ . - (in its producer's scope)"
    return None


def _short_str(name: str, value: object, limit: int, *, pattern: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        return f"{name} must be a string of at most {limit} characters"
    if pattern and not JOB_ID_PATTERN.fullmatch(value):
        return f"{name} must use A-Z a-z 0-9 _ . - only"
    return None


def _check_generate(kw: Mapping[str, Any]) -> str | None:
    request = kw.get("request")
    if not isinstance(request, dict):
        return "request must be an object (the vendor's generation body)"
    producer = kw.get("producer")
    # A request breaking the vendor's rules is the job's failure (intake records it as
    # ``invalid_request``: visible in ``nbq status`` and as a FAILURE in Flower), not a
    # message fault: the message itself is well formed.
    return (
        _short_str("producer", producer, MAX_NAME_CHARS, pattern=True)
        or _scoped("job_id", kw.get("job_id"), producer)
        or _short_str("batch_id", kw.get("batch_id"), 2 * MAX_NAME_CHARS)
        or _priority(kw.get("priority"))
        or _short_str("notify_url", kw.get("notify_url"), 2048)
        or (
            "on_done must be an object"
            if kw.get("on_done") is not None and not isinstance(kw.get("on_done"), dict)
            else None
        )
        or _short_str("producer_proof", kw.get("producer_proof"), MAX_TOKEN_CHARS)
    )


def _priority(value: object) -> str | None:
    """``high | normal | low`` (absent = normal): the fair-share gate's order."""
    if value is None or value in ("high", "normal", "low"):
        return None
    return "priority must be one of high, normal, low"


def _task_id(kw: Mapping[str, Any]) -> str | None:
    """The Evolink task id a poll/download carries to rescue a vanished record."""
    return _short_str("evolink_task_id", kw.get("evolink_task_id"), MAX_TOKEN_CHARS, pattern=True)


def _check_job(kw: Mapping[str, Any]) -> str | None:
    return _job_id(kw.get("job_id"), required=True) or _task_id(kw)


def _check_poll(kw: Mapping[str, Any]) -> str | None:
    return (
        _job_id(kw.get("job_id"), required=True)
        or _short_str("token", kw.get("token"), MAX_TOKEN_CHARS)
        or _task_id(kw)
    )


def _check_adopt(kw: Mapping[str, Any]) -> str | None:
    source = kw.get("source")
    if source is not None and source not in ("callback", "person"):
        return "source must be 'callback' or 'person'"
    return (
        _job_id(kw.get("job_id"), required=True)
        or ("task_id is required" if kw.get("task_id") is None else None)
        or _short_str("task_id", kw.get("task_id"), MAX_TOKEN_CHARS, pattern=True)
    )


def _check_notify(kw: Mapping[str, Any]) -> str | None:
    """Shape only: the URL was checked at enqueue and is checked again at connect time."""
    for name in ("webhook_id", "event", "url"):
        if not isinstance(kw.get(name), str):
            return f"{name} is required (a string)"
    if not isinstance(kw.get("payload"), dict):
        return "payload must be an object"
    if not _number(kw.get("first_at")) or not isinstance(kw.get("attempt", 0), int):
        return "first_at must be a number, attempt an integer"
    return _job_id(kw.get("job_id"), required=True)


def _check_none(_: Mapping[str, Any]) -> str | None:
    return None


#: The value checks a pipeline entry names (``Stage.check`` in ``workers/pipeline.py``).
CHECKS: Final[dict[str, Callable[[Mapping[str, Any]], str | None]]] = {
    "generate": _check_generate,
    "job": _check_job,
    "poll": _check_poll,
    "adopt": _check_adopt,
    "notify": _check_notify,
    "none": _check_none,
}

#: Each task's parameters (in positional order) and the check of their values: every task
#: of the pipeline's declaration, and no other.
TASK_PARAMS: Final[dict[str, tuple[tuple[str, ...], Callable[[Mapping[str, Any]], str | None]]]] = {
    stage.task: (stage.param_names, CHECKS[stage.check]) for stage in PIPELINE
}


def parse_time(value: object) -> datetime | None:
    """An ETA/expires header as an aware UTC datetime; raises ValueError if unusable."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ValueError("must be an ISO 8601 string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:  # Celery treats naive times as UTC (enable_utc)
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def check_headers(headers: Mapping[str, Any], now: float, limits: Limits) -> Refusal | None:
    """Every header Celery's Request reads, with the type it needs."""
    problem = _header_types(headers) or _header_options(headers)
    if problem is not None:
        return Refusal("bad_header", problem)
    return _check_times(headers, now, limits)


def _header_types(headers: Mapping[str, Any]) -> str | None:
    """The id, the string headers and the retry count."""
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_ID_CHARS:
        return f"id must be a non-empty string of at most {MAX_ID_CHARS}"
    if not is_visible(task_id):  # Celery's own log lines print it as it is
        return "id must not contain control characters"
    for name in _STR_OR_NONE_HEADERS:
        value = headers.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 4096):
            return f"{name} must be a string or null"
        if value is not None and not is_visible(value):
            return f"{name} must not contain control characters"
    retries = headers.get("retries", 0)
    if retries is None:
        retries = 0
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
        return "retries must be a non-negative integer"
    return None


def _header_options(headers: Mapping[str, Any]) -> str | None:
    """The time limits, flags, group index and stamps."""
    timelimit = headers.get("timelimit")
    if timelimit is not None and not (
        isinstance(timelimit, list | tuple)
        and len(timelimit) == 2
        and all(v is None or _number(v) for v in timelimit)
    ):
        return "timelimit must be [soft, hard] (numbers or null)"
    for name in ("ignore_result",):
        if headers.get(name) is not None and not isinstance(headers.get(name), bool):
            return f"{name} must be a boolean"
    for name in ("group_index", "replaced_task_nesting"):
        value = headers.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"{name} must be an integer"
    if headers.get("stamped_headers") is not None and not isinstance(
        headers.get("stamped_headers"), list
    ):
        return "stamped_headers must be a list"
    if headers.get("stamps") is not None and not isinstance(headers.get("stamps"), dict):
        return "stamps must be an object"
    return None


def _seconds_after(moment: datetime, now: float) -> float | None:
    """``moment`` minus ``now`` in seconds; None when ``moment`` has no timestamp."""
    try:
        return moment.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None


def _check_times(headers: Mapping[str, Any], now: float, limits: Limits) -> Refusal | None:
    """``eta`` within the countdown horizon and ``expires`` not yet passed."""
    times: dict[str, datetime | None] = {}
    for name in ("eta", "expires"):
        try:
            times[name] = parse_time(headers.get(name))
        except (ValueError, TypeError, OverflowError) as exc:
            return Refusal("bad_header", f"{name}: {exc}"[:200])
    eta, expires = times["eta"], times["expires"]
    if eta is not None:
        ahead_s = _seconds_after(eta, now)
        if ahead_s is None:
            return Refusal("bad_header", "eta out of range")
        if ahead_s > limits.max_countdown_s + CLOCK_SKEW_S:
            return Refusal(
                "eta_beyond_horizon",
                f"eta {ahead_s:.0f}s ahead; no message of ours waits longer than "
                f"NBQ_MAX_COUNTDOWN_S={limits.max_countdown_s:g}s",
            )
    if expires is not None:
        left_s = _seconds_after(expires, now)
        if left_s is None:
            return Refusal("bad_header", "expires out of range")
        if left_s <= 0:
            return Refusal("expired", "its expires time has passed")
    return None


def bind_kwargs(task: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any] | str:
    """The task's keyword arguments with positional ones named, or a problem."""
    params, _ = TASK_PARAMS[task]
    if len(args) > len(params):
        return f"{task} takes at most {len(params)} positional arguments"
    bound = dict(zip(params, args, strict=False))
    for key in kwargs:
        if key in bound:
            return f"{key} given twice"
        if key not in params:
            return f"unexpected argument {str(key)[:64]!r} (allowed: {', '.join(params)})"
    bound.update(kwargs)
    return bound


def check_body(task: str, body: object) -> Refusal | None:
    """A decoded body: ``[args, kwargs, embed]`` with arguments the task accepts."""
    if not isinstance(body, list) or len(body) != 3:
        return Refusal("body_shape", "body must be a JSON list [args, kwargs, embed]")
    args, kwargs, embed = body
    if not isinstance(args, list):
        return Refusal("body_shape", "args must be a list")
    if not isinstance(kwargs, dict):
        return Refusal("body_shape", "kwargs must be an object")
    if not isinstance(embed, dict):
        return Refusal("body_shape", "embed must be an object")
    if any(embed.get(key) is not None for key in _EMBED_KEYS):
        return Refusal("body_shape", "callbacks, errbacks, chains and chords are not accepted")
    bound = bind_kwargs(task, args, kwargs)
    if isinstance(bound, str):
        return Refusal("invalid_kwargs", bound)
    _, check = TASK_PARAMS[task]
    problem = check(bound)
    return Refusal("invalid_kwargs", problem) if problem else None


def inspect_message(
    *,
    headers: object,
    body: object,
    content_type: object,
    content_encoding: object,
    now: float,
    limits: Limits,
) -> Refusal | None:
    """None for a message our tasks can take; else why not. Never raises."""
    try:
        return _inspect(headers, body, content_type, content_encoding, now, limits)
    except Exception as exc:  # a check that breaks refuses, it never passes a message
        return Refusal("handler_error", f"guard check failed: {type(exc).__name__}")


def _inspect(
    headers: object,
    body: object,
    content_type: object,
    content_encoding: object,
    now: float,
    limits: Limits,
) -> Refusal | None:
    if not isinstance(headers, Mapping) or "task" not in headers:
        return Refusal("not_a_task", "no task header (only Celery protocol 2 is accepted)")
    task = headers.get("task")
    if not isinstance(task, str) or task not in TASK_PARAMS:
        return Refusal("unknown_task", f"task {str(task)[:100]!r} is not an nbq task")
    if content_type != "application/json" or str(content_encoding or "utf-8").lower() not in (
        "utf-8",
        "utf8",
    ):
        return Refusal(
            "content_type",
            f"content type {str(content_type)[:60]!r} / {str(content_encoding)[:30]!r}: "
            "only application/json in utf-8 is accepted",
        )
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if not isinstance(raw, bytes | bytearray | memoryview):
        return Refusal("undecodable", f"body of type {type(body).__name__}")
    if len(raw) > limits.max_message_bytes:
        return Refusal(
            "oversized",
            f"body of {len(raw)} bytes exceeds NBQ_MAX_MESSAGE_BYTES={limits.max_message_bytes}",
        )
    refusal = check_headers(headers, now, limits)
    if refusal is not None:
        return refusal
    try:
        decoded = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Refusal("undecodable", f"body is not JSON: {type(exc).__name__}")
    return check_body(task, decoded)
