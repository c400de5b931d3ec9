"""How long the API asks us to wait: ``Retry-After`` headers and ``fallback_suggestion`` text.

Pure functions (no I/O) so the error mapping in the client stays a table lookup and the
parsing can be tested on its own. Every function answers ``None`` when it cannot tell,
never raises on hostile input, and never answers a negative or absurd delay.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

#: Longest wait we believe a server means (a day); anything larger is treated as noise.
MAX_RETRY_AFTER_S = 24 * 3600.0

_UNIT_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_SUGGESTION = re.compile(
    r"(?i)(?:retry|try again|wait)\D{0,20}?(\d+(?:\.\d+)?)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m)?\b"
)


def _bounded(seconds: float) -> float | None:
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_RETRY_AFTER_S:
        return None
    return seconds


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta seconds (int or float) or an HTTP-date.

    ``now`` (aware, UTC) is for tests; a date in the past means "retry now" (0 s).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return _bounded(float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses as naive
        when = when.replace(tzinfo=UTC)
    delta_s = (when - (now or datetime.now(UTC))).total_seconds()
    return _bounded(max(0.0, delta_s))


def parse_fallback_suggestion(text: object) -> float | None:
    """Seconds from prose such as ``"retry after 60 seconds"`` or ``"try again in 2 minutes"``."""
    if not isinstance(text, str):
        return None
    match = _SUGGESTION.search(text[:500])
    if match is None:
        return None
    unit = (match.group(2) or "s").lower().rstrip("s") or "s"
    try:
        amount = float(match.group(1))
    except ValueError:
        return None
    return _bounded(amount * _UNIT_S.get(unit, 1.0))


def suggestion_from_body(body: object) -> float | None:
    """``fallback_suggestion`` at the top level of an error body or inside its ``error``."""
    if not isinstance(body, Mapping):
        return None
    found = parse_fallback_suggestion(body.get("fallback_suggestion"))
    if found is not None:
        return found
    error: Any = body.get("error")
    if isinstance(error, Mapping):
        return parse_fallback_suggestion(error.get("fallback_suggestion"))
    return None
