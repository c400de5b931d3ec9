"""Sizes of each benchmark at ``--scale small`` (a few minutes) and ``full``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    name: str
    b1_jobs: int
    b2_jobs: int
    b3_jobs: int
    b5_requests: int
    workers_concurrency: int = 8


SCALES = {
    "small": Scale("small", b1_jobs=300, b2_jobs=300, b3_jobs=2000, b5_requests=1000),
    "full": Scale("full", b1_jobs=1000, b2_jobs=1000, b3_jobs=10_000, b5_requests=3000),
}
