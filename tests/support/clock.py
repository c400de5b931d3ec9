"""A wall clock that moves only when the test moves it (for code that takes ``clock=``).

A test that sleeps past a deadline depends on the machine keeping up; one that steps a
clock states the time it means, and passes on a loaded machine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SteppedClock:
    """``clock()`` answers ``now`` (epoch seconds) until ``advance`` moves it."""

    now: float = 1_796_000_000.0  # 2026-11-30, a fixed day: nothing depends on today

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
