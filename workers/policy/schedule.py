"""When to poll and how long to back off: pure functions of the job's numbers.

The poll schedule aims for few polls and a short detection lag:
- the first poll comes a little before the expected finish (``estimated_time`` × 0.7 by
  default: generation times spread around the estimate, and a task that finishes early
  should not wait for a late first poll — that was the p95 detection lag in benchmark B2);
- later polls use the task's own progress to predict the finish when it is meaningful
  (jittered only earlier: the prediction errs late), otherwise a short interval
  proportional to ``estimated_time``;
- every countdown is clamped to ``[min_interval_s, max_interval_s]`` and jittered, so that
  thousands of jobs created together do not poll in lockstep, and no countdown ever
  approaches the broker's visibility timeout (see docs/failure-handling.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from nanobanana_queue.workers.settings import Settings

#: Interval between later polls as a fraction of ``estimated_time``.
FOLLOW_UP_FRACTION = 0.08
#: Progress range in which the API's progress is trusted to predict the finish.
PROGRESS_TRUSTED = (5, 95)


@dataclass(frozen=True)
class PollSchedule:
    first_factor: float
    min_interval_s: float
    max_interval_s: float
    jitter_ratio: float
    deadline_s: float
    default_estimated_time_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> PollSchedule:
        return cls(
            first_factor=settings.poll_first_factor,
            min_interval_s=settings.poll_min_interval_s,
            max_interval_s=max(settings.poll_max_interval_s, settings.poll_min_interval_s),
            jitter_ratio=settings.poll_jitter_ratio,
            deadline_s=settings.poll_deadline_s,
            default_estimated_time_s=settings.default_estimated_time_s,
        )

    def first_countdown_s(self, estimated_time_s: float | None, rng: random.Random) -> float:
        """Wait before the first poll: near the expected finish, never past the hop cap."""
        estimate = self._estimate(estimated_time_s)
        return self._clamp_jitter(estimate * self.first_factor, rng, max_s=self._first_cap_s())

    def next_countdown_s(
        self,
        *,
        estimated_time_s: float | None,
        elapsed_s: float,
        progress: int,
        rng: random.Random,
    ) -> float:
        """Wait before the next poll after a poll that found the task still running.

        With a trustworthy progress figure, aim at the predicted finish (elapsed time per
        percent × percent left): one more poll usually finds the task done, with a lag of
        a poll's jitter. Without one, poll at a short fraction of the estimate.
        """
        estimate = self._estimate(estimated_time_s)
        low, high = PROGRESS_TRUSTED
        if low <= progress <= high and elapsed_s > 0:
            # ``elapsed_s`` counts from the create, but progress only from when processing
            # began (after the task's pending/queued phase), so this prediction errs late;
            # the jitter therefore only ever pulls the poll earlier, never later.
            interval = elapsed_s * (100 - progress) / progress
            return self._clamp_jitter(interval, rng, max_s=self.max_interval_s, early_only=True)
        if elapsed_s < estimate * self.first_factor:
            # Polled early (a retry or a reconciler re-drive): aim at the first target.
            interval = estimate * self.first_factor - elapsed_s
        else:
            interval = estimate * FOLLOW_UP_FRACTION
        return self._clamp_jitter(interval, rng, max_s=self.max_interval_s)

    def _estimate(self, estimated_time_s: float | None) -> float:
        if estimated_time_s is None or estimated_time_s <= 0:
            return self.default_estimated_time_s
        return estimated_time_s

    def _first_cap_s(self) -> float:
        # The first hop may be longer than later ones, but stays far below any sane
        # visibility timeout (an hour by default).
        return max(self.max_interval_s * 8, self.min_interval_s)

    def _clamp_jitter(
        self, seconds: float, rng: random.Random, *, max_s: float, early_only: bool = False
    ) -> float:
        jitter = 1.0 + rng.uniform(-self.jitter_ratio, 0.0 if early_only else self.jitter_ratio)
        return min(max(seconds * jitter, self.min_interval_s), max_s)


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff that honours a server's ``Retry-After``."""

    base_s: float
    max_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Backoff:
        return cls(base_s=settings.retry_backoff_base_s, max_s=settings.retry_backoff_max_s)

    def delay_s(
        self, attempt: int, rng: random.Random, retry_after_s: float | None = None
    ) -> float:
        """Delay before retry number ``attempt`` (0-based): full jitter, at least Retry-After."""
        ceiling = min(self.max_s, self.base_s * (2 ** min(max(attempt, 0), 30)))
        delay = rng.uniform(ceiling / 2, ceiling)
        if retry_after_s is not None and retry_after_s > 0:
            delay = max(delay, retry_after_s)
        return delay
