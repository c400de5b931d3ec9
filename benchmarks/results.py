"""One benchmark's outcome: inputs, raw numbers, the ratio (or value) and its target."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BenchResult:
    id: str
    title: str
    #: The headline number (a ratio for B1/B5/B6, a count or size for the others).
    value: float
    unit: str
    target: str
    passed: bool | None
    inputs: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    notes: str = ""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def failed(bench_id: str, title: str, target: str, error: str) -> BenchResult:
    """A benchmark that could not run to the end (the others still report)."""
    return BenchResult(bench_id, title, 0.0, "", target, False, error=error)
