"""How long a task takes: a seeded draw around the estimate, and progress over time.

Nominal numbers are full-scale seconds; :class:`DurationModel` returns them already
scaled by ``time_scale`` where they are used as real time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from nanobanana_queue.emulator.constants import BASE_ESTIMATE_S, PENDING_SHARE, THINKING_FACTOR

#: Spread of the lognormal draw: about 90 % of durations fall within +-30 % of the estimate.
DURATION_SIGMA = 0.18
#: Draws are clamped to this band around the estimate (no absurd outliers).
DURATION_CLAMP = (0.4, 2.5)


def nominal_estimate_s(quality: str, thinking_level: str) -> float:
    """The vendor-style ``estimated_time`` at full scale."""
    return BASE_ESTIMATE_S[quality] * THINKING_FACTOR[thinking_level]


@dataclass
class DurationModel:
    """Draws generation durations; deterministic for a given seed."""

    time_scale: float
    rng: random.Random
    fixed_duration_s: float | None = None

    def estimated_time(self, quality: str, thinking_level: str) -> int:
        """What ``task_info.estimated_time`` reports: whole seconds at every scale (the spec
        types it ``integer``), rounded up so a client never polls before the real estimate."""
        return max(1, math.ceil(self.scaled_estimate_s(quality, thinking_level) - 1e-9))

    def scaled_estimate_s(self, quality: str, thinking_level: str) -> float:
        """The exact scaled estimate (``X-Emulator-Estimated-Time``, not on the wire body)."""
        return round(nominal_estimate_s(quality, thinking_level) * self.time_scale, 6)

    def draw_nominal_s(self, quality: str, thinking_level: str) -> float:
        """A full-scale generation time for one task."""
        if self.fixed_duration_s is not None:
            return self.fixed_duration_s
        estimate = nominal_estimate_s(quality, thinking_level)
        factor = math.exp(self.rng.gauss(0.0, DURATION_SIGMA))
        low, high = DURATION_CLAMP
        return estimate * min(max(factor, low), high)


def phase_at(now: float, started_at: float, finishes_at: float) -> tuple[str, int]:
    """``(status, progress)`` of an unfinished-or-finished task at ``now`` (no outcome)."""
    if now >= finishes_at:
        return ("done", 100)
    if now < started_at:
        return ("pending", 0)
    span = finishes_at - started_at
    share = (now - started_at) / span if span > 0 else 1.0
    return ("processing", min(99, max(1, int(share * 100))))


def pending_until(created_at: float, duration_s: float) -> float:
    """When a task leaves ``pending``."""
    return created_at + duration_s * PENDING_SHARE
