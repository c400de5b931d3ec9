"""The poll schedule and backoff are pure functions of a job's numbers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanobanana_queue.workers.policy.schedule import Backoff, PollSchedule

SCHEDULE = PollSchedule(
    first_factor=0.7,
    min_interval_s=2.0,
    max_interval_s=15.0,
    jitter_ratio=0.1,
    deadline_s=600,
    default_estimated_time_s=30,
)


def test_the_first_poll_comes_a_little_before_the_estimated_finish() -> None:
    countdown = SCHEDULE.first_countdown_s(30, random.Random(1))
    assert 0.7 * 30 * 0.9 <= countdown <= 0.7 * 30 * 1.1


def test_without_an_estimate_the_default_estimate_is_used() -> None:
    assert SCHEDULE.first_countdown_s(None, random.Random(1)) == pytest.approx(21, rel=0.11)
    assert SCHEDULE.first_countdown_s(0, random.Random(1)) == pytest.approx(21, rel=0.11)


def test_a_trusted_progress_figure_aims_the_next_poll_at_the_predicted_finish() -> None:
    # 21 s elapsed at 70 %: 9 s to go.
    countdown = SCHEDULE.next_countdown_s(
        estimated_time_s=30, elapsed_s=21, progress=70, rng=random.Random(2)
    )
    assert countdown == pytest.approx(9, rel=0.11)


@given(progress=st.integers(5, 95), elapsed=st.floats(1, 60), seed=st.integers(0, 2**32))
def test_a_predicted_finish_is_only_ever_jittered_earlier(
    progress: int, elapsed: float, seed: int
) -> None:
    # The prediction counts the task's pending phase as processing time, so it errs late;
    # jitter that could push it later still would only add detection lag (B2).
    predicted = elapsed * (100 - progress) / progress
    countdown = SCHEDULE.next_countdown_s(
        estimated_time_s=30, elapsed_s=elapsed, progress=progress, rng=random.Random(seed)
    )
    clamped = min(max(predicted, SCHEDULE.min_interval_s), SCHEDULE.max_interval_s)
    assert countdown <= clamped + 1e-9
    assert countdown >= min(predicted * (1 - SCHEDULE.jitter_ratio), clamped) - 1e-9


def test_past_the_trusted_progress_range_polls_come_at_short_steady_hops() -> None:
    countdown = SCHEDULE.next_countdown_s(
        estimated_time_s=30, elapsed_s=35, progress=99, rng=random.Random(3)
    )
    assert countdown == pytest.approx(2.4, rel=0.11)


def test_an_early_poll_without_progress_aims_at_the_first_target() -> None:
    countdown = SCHEDULE.next_countdown_s(
        estimated_time_s=30, elapsed_s=10, progress=0, rng=random.Random(4)
    )
    assert countdown == pytest.approx(11, rel=0.11)


@given(
    estimate=st.floats(0, 10_000),
    elapsed=st.floats(0, 100_000),
    progress=st.integers(-5, 105),
    seed=st.integers(0, 2**32),
)
def test_every_countdown_stays_within_the_configured_bounds(
    estimate: float, elapsed: float, progress: int, seed: int
) -> None:
    rng = random.Random(seed)
    follow_up = SCHEDULE.next_countdown_s(
        estimated_time_s=estimate, elapsed_s=elapsed, progress=progress, rng=rng
    )
    assert SCHEDULE.min_interval_s <= follow_up <= SCHEDULE.max_interval_s
    first = SCHEDULE.first_countdown_s(estimate, rng)
    # The first hop may be longer, but stays far below any visibility timeout.
    assert SCHEDULE.min_interval_s <= first <= SCHEDULE.max_interval_s * 8


def test_backoff_grows_exponentially_and_is_capped() -> None:
    backoff = Backoff(base_s=1, max_s=60)
    rng = random.Random(5)
    delays = [backoff.delay_s(attempt, rng) for attempt in range(10)]
    assert 0.5 <= delays[0] <= 1
    assert all(d <= 60 for d in delays)
    assert delays[7] >= 30


def test_backoff_honours_retry_after() -> None:
    assert Backoff(base_s=1, max_s=60).delay_s(0, random.Random(6), retry_after_s=42) == 42
