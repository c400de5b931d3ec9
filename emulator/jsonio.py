"""JSON encode/decode: orjson when installed (several times faster), else the stdlib."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional
    orjson = None  # type: ignore[assignment]

JSONDecodeError: type[Exception] = ValueError  # both parsers raise a ValueError subclass


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes) -> Any:
    """Parse JSON bytes; raises ``ValueError`` on bad input."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


def using_orjson() -> bool:
    return orjson is not None
