"""Structured logging (structlog): one event per line, secrets and signatures removed."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_URL = re.compile(r"(https?://[^\s?#\"']+)\?[^\s\"']*")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+")
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that no log line can ever contain it."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact_text(text: str) -> str:
    """Strip query strings from URLs (signed links), bearer tokens and known secrets."""
    text = _URL.sub(r"\1?<redacted>", text)
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


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
