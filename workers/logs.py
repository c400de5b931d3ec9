"""Structured logging (structlog): one event per line, secrets and signatures removed."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from nanobanana_queue.workers.tracing import add_trace_ids
from nanobanana_queue.workers.visible import visible

_URL = re.compile(r"(https?://[^\s?#\"']+)\?[^\s\"']*")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+")
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that no log line can ever contain it."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact_text(text: str) -> str:
    """Strip query strings from URLs (signed links), bearer tokens and known secrets.

    Every value of every log line passes here (a worker writes ~6 lines per job), and a
    ``sub`` costs microseconds even when nothing matches: each pattern is only applied
    when the text can hold a match (a URL query needs ``://`` and ``?``; a bearer token
    is searched first, which is far cheaper than a ``sub`` that finds nothing).
    """
    if "://" in text and "?" in text:
        text = _URL.sub(r"\1?<redacted>", text)
    if _BEARER.search(text) is not None:
        text = _BEARER.sub(r"\1<redacted>", text)
    for secret in _SECRETS:
        text = text.replace(secret, "<redacted>")
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: runs last before rendering so nothing escapes it."""
    return {k: _redact_value(v) for k, v in event_dict.items()}


#: Longest string value a log line keeps (job ids, prompts, URLs and error texts come from
#: callers: a 1 MB job id must not become a 1 MB log line).
MAX_LOG_VALUE_CHARS = 200
#: Keys never cut: the event name is ours, tracebacks are needed whole.
_UNCAPPED_KEYS = frozenset({"event", "exception", "stack"})


def cap_text(text: str, limit: int = MAX_LOG_VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters plus ``…(N chars)`` naming its full length."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def _cap_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return cap_text(value)
    if depth > 4:
        return cap_text(repr(value))
    if isinstance(value, dict):
        items = list(value.items())
        capped = {cap_text(str(k), 64): _cap_value(v, depth + 1) for k, v in items[:50]}
        if len(items) > 50:
            capped["…"] = f"({len(items)} keys)"
        return capped
    if isinstance(value, list | tuple):
        shown = [_cap_value(v, depth + 1) for v in value[:50]]
        return shown + ([f"…({len(value)} items)"] if len(value) > 50 else [])
    if isinstance(value, bytes | bytearray):
        return cap_text(repr(bytes(value[: MAX_LOG_VALUE_CHARS + 1])))
    return value


def cap_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every value capped (after redaction, so a secret cut in half
    by the cap was already replaced whole)."""
    return {k: v if k in _UNCAPPED_KEYS else _cap_value(v) for k, v in event_dict.items()}


#: Keys whose newlines are kept (tracebacks); their other control characters are escaped.
_MULTILINE_KEYS = frozenset({"exception", "stack"})


class _Escaped:
    """A string that had to be escaped, for the console renderer: it prints ``repr`` of a
    non-string, so the value comes out quoted, ``job_id='x\\x1b]0;…'``, and reads as an
    escaped value, not as text the sender chose."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"'{self.text}'"

    def __str__(self) -> str:
        return self.text


def _visible_value(value: Any, *, quote: bool, keep_lines: bool = False) -> Any:
    if isinstance(value, str):
        shown = visible(value, keep_lines=keep_lines)
        return _Escaped(shown) if quote and shown != value and not keep_lines else shown
    if isinstance(value, dict):
        return {
            _visible_value(k, quote=False): _visible_value(v, quote=quote) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_visible_value(v, quote=quote) for v in value]
    return value


def visible_processor(*, quote: bool) -> Any:
    """structlog processor (the last before rendering): every key and string value with
    its control characters, bidi marks and line breaks escaped (:mod:`workers.visible`),
    so no value can drive the terminal that tails the log or forge a log line."""

    def process(
        _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return {
            visible(k): _visible_value(v, quote=quote, keep_lines=k in _MULTILINE_KEYS)
            for k, v in event_dict.items()
        }

    return process


#: Event keys already escaped (``visible``), by key: the same few dozen names on every line.
_SHOWN_KEYS: dict[str, str] = {}
_MAX_SHOWN_KEYS = 4096
#: Values every step passes unchanged (nothing to redact, cap or escape).
_PLAIN_TYPES = (int, float, bool, type(None))


def _shown_key(key: Any) -> str:
    if type(key) is not str:
        return visible(key)
    shown = _SHOWN_KEYS.get(key)
    if shown is None:
        shown = visible(key)
        if len(_SHOWN_KEYS) < _MAX_SHOWN_KEYS:  # bounded: a key may come from a caller
            _SHOWN_KEYS[key] = shown
    return shown


def _scrubbed(key: str, value: Any, quote: bool) -> Any:
    keep_lines = key in _MULTILINE_KEYS
    if type(value) is str:  # nearly every value: the three steps without their dispatch
        text = redact_text(value)
        if key not in _UNCAPPED_KEYS and len(text) > MAX_LOG_VALUE_CHARS:
            text = cap_text(text)
        shown = visible(text, keep_lines=keep_lines)
        return _Escaped(shown) if quote and shown != text and not keep_lines else shown
    if type(value) in _PLAIN_TYPES:
        return value
    redacted = _redact_value(value)
    capped = redacted if key in _UNCAPPED_KEYS else _cap_value(redacted)
    return _visible_value(capped, quote=quote, keep_lines=keep_lines)


def scrub_processor(*, quote: bool) -> Any:
    """structlog processor (the last before rendering): :func:`redact_processor`, then
    :func:`cap_processor`, then :func:`visible_processor`, in one pass over the event
    dict (the same output: a test holds it to the three in a row). Every line of the
    process passes here (~6 per job), so the common value, a short string, takes one
    redaction, one length check and one escape check without rebuilding the dict three
    times."""

    def process(
        _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        return {_shown_key(k): _scrubbed(k, v, quote) for k, v in event_dict.items()}

    return process


def _visible_arg(value: Any) -> Any:
    return visible(value) if isinstance(value, str) else value


def escape_stdlib_records() -> None:
    """The same rule for the stdlib log records of Celery, kombu and uvicorn: their string
    arguments (task ids, names, peers) escaped, their message's control characters too
    (its newlines kept). Installed once, as the process's log record factory."""
    base = logging.getLogRecordFactory()
    if getattr(base, "nbq_visible", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = visible(record.msg, keep_lines=True)
        if isinstance(record.args, tuple):
            if record.args:  # empty for most records, and for every formatter's copy
                record.args = tuple([_visible_arg(a) for a in record.args])
        elif isinstance(record.args, dict):
            record.args = {k: _visible_arg(v) for k, v in record.args.items()}
        return record

    factory.nbq_visible = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


#: Libraries whose INFO lines repeat what our events say (one per HTTP request).
QUIET_LOGGERS = ("httpx", "httpcore")
#: Celery's line for every message a worker takes ("Task nbq.poll[<id>] received"): written
#: by the consumer's loop, the one thread that feeds the whole pool, ~11 % of its CPU
#: rendered (benchmarks/profile_worker.py --pool prefork), and said again by Flower's
#: ``task-received`` event and by the run's own "succeeded in" line. Shown with
#: ``--loglevel DEBUG``; WARNING and above always.
PER_MESSAGE_LOGGERS = ("celery.worker.strategy",)
#: The root handler this module installs (found again and replaced on reconfiguration).
HANDLER_NAME = "nbq"


def configure_logging(level: str = "INFO", *, json: bool = False, stdlib: bool = True) -> None:
    """Every line the process writes in one format: structlog's events and, through
    structlog's stdlib bridge (``ProcessorFormatter`` on the root logger), Celery's, kombu's
    and uvicorn's records and Python warnings — JSON objects one per line with ``json``
    (NBQ_LOG_JSON, production), the console renderer otherwise. Redaction and caps apply to
    all of them.

    ``stdlib=False`` (a ``Producer`` inside someone else's service) configures structlog
    alone, printing to stderr, and leaves the host's ``logging`` untouched.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    threshold = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    stamped: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,  # trace_id/span_id when tracing is on (workers/tracing.py)
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    #: The last steps of every line, ours or another library's: redacted, capped, rendered.
    rendering: list[Any] = [
        structlog.processors.format_exc_info,
        scrub_processor(quote=not json),  # redact_processor, cap_processor, visible_processor
        renderer,
    ]
    if not stdlib:
        structlog.configure(
            processors=[*stamped, *rendering],
            wrapper_class=structlog.make_filtering_bound_logger(threshold),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=False,
        )
        return
    structlog.configure(
        processors=[
            *stamped,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Records of other libraries (Celery, kombu, uvicorn, py.warnings) get the same
        # fields as ours, plus the logger's name.
        foreign_pre_chain=[*stamped, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    skip_unrendered_record_fields()
    # The stream of this moment, as structlog's own PrintLogger would (a test redirects
    # stderr around this call; tests/support/logging_guard.py removes the handler after).
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    # warnings.warn(...) as records of the py.warnings logger; off first, so that a
    # showwarning replaced since an earlier call (warnings.catch_warnings) is taken over.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    for chatty in QUIET_LOGGERS:  # a line per HTTP request: our own events already say it
        logging.getLogger(chatty).setLevel(max(threshold, logging.WARNING))
    for chatty in PER_MESSAGE_LOGGERS:  # a line per message: at DEBUG only
        logging.getLogger(chatty).setLevel(
            threshold if threshold < logging.INFO else max(threshold, logging.WARNING)
        )
    escape_stdlib_records()  # Celery's, kombu's, uvicorn's arguments escaped too


def skip_unrendered_record_fields() -> None:
    """Stop ``logging`` from looking up, for every record, what no line of ours shows: the
    caller's file, line and function (a walk up the stack: structlog's bridge skips its own
    frames to find it), the thread, the process id and name. Our formats render the event
    dict (structlog's fields, a foreign record's message, level, logger name, time), never
    these. The switches are the ones the Python Logging HOWTO lists under "Optimization".
    A worker writes ~6 lines per job (3 events of ours, 3 of Celery's), each line builds
    two records (structlog's formatter copies it): this was ~15 % of a line's cost.

    Process-wide, so only where this module owns the process's logging (``stdlib=True``).
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def log_json_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """``NBQ_LOG_JSON`` as the settings read it (``true``/``1``/``yes``/``on``, any case),
    for what logs without the settings or before they could be read: the emulator, and a
    configuration error that stops a command (an unreadable value: off)."""
    env = os.environ if environ is None else environ
    value = next((v for k, v in env.items() if k.upper() == "NBQ_LOG_JSON"), "").strip()
    if not value:
        return False
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(bool).validate_python(value)
    except ValidationError:
        return False


def error_event_if_json(code: str, message: str, *, logger: str = "nbq.cli") -> bool:
    """Under NBQ_LOG_JSON (:func:`log_json_from_env`), an error that stops a command is
    one JSON event on stderr (``event`` the ``code``, ``level`` error, ``message``) like
    every other line of the process, logging set up for it if nothing has yet. Returns
    whether it was logged so (otherwise the caller prints its one line of text)."""
    if not log_json_from_env():
        return False
    if not structlog.is_configured():
        configure_logging(json=True, stdlib=False)
    get_logger(logger).error(code, message=message)
    return True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
