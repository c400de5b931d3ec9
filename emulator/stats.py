"""Counters the control API reports (``GET /_emulator/stats``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Plain counters; one event loop, so no locking is needed."""

    creates_accepted: int = 0
    creates_rejected: Counter[str] = field(default_factory=Counter)
    idempotent_repeats: int = 0
    creates_by_idempotency_key: Counter[str] = field(default_factory=Counter)
    queries_total: int = 0
    queries_by_task: Counter[str] = field(default_factory=Counter)
    queries_rejected: Counter[str] = field(default_factory=Counter)
    file_downloads: int = 0
    file_bytes_served: int = 0
    files_rejected: Counter[str] = field(default_factory=Counter)
    callbacks: Counter[str] = field(default_factory=Counter)
    credits_charged: float = 0.0
    #: Each task's charge (every created task is charged once), and their sum per
    #: ``Idempotency-Key``: a client's own figures can be checked task by task.
    charges_by_task: dict[str, float] = field(default_factory=dict)
    charges_by_idempotency_key: dict[str, float] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready copy; only keys with more than one create would mean a client bug."""
        return {
            "creates_accepted": self.creates_accepted,
            "creates_rejected": dict(self.creates_rejected),
            "idempotent_repeats": self.idempotent_repeats,
            "creates_by_idempotency_key": dict(self.creates_by_idempotency_key),
            "duplicate_idempotency_keys": sorted(
                key for key, count in self.creates_by_idempotency_key.items() if count > 1
            ),
            "queries_total": self.queries_total,
            "queries_by_task": dict(self.queries_by_task),
            "queries_rejected": dict(self.queries_rejected),
            "file_downloads": self.file_downloads,
            "file_bytes_served": self.file_bytes_served,
            "files_rejected": dict(self.files_rejected),
            "callbacks": {
                name: self.callbacks[name]
                for name in ("sent", "delivered", "failed", "dropped", "skipped")
            },
            "credits_charged": round(self.credits_charged, 6),
            "charges_by_task": dict(self.charges_by_task),
            "charges_by_idempotency_key": {
                key: round(credits, 6) for key, credits in self.charges_by_idempotency_key.items()
            },
        }
