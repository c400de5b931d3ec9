"""The Celery configuration (workers/app.py): every task of ours runs under a time limit,
and the submitting tasks' limits follow ``NBQ_SUBMIT_TIME_LIMIT_S``."""

from __future__ import annotations

from typing import Any

import pytest

import nanobanana_queue.workers.tasks  # noqa: F401 - registers the nbq.* tasks on the app
from nanobanana_queue.workers.app import SUBMITTING_TASKS, app, celery_config
from nanobanana_queue.workers.settings import ConfigError, Settings, load_settings


def limits(settings: Settings) -> dict[str, Any]:
    annotations: dict[str, Any] = celery_config(settings)["task_annotations"]
    return annotations


def test_every_registered_nbq_task_has_a_soft_and_a_hard_time_limit() -> None:
    # A task without one (nbq.adopt was) could hold a worker slot forever.
    ours = {name for name in app.tasks if name.startswith("nbq.")}
    configured = limits(Settings())
    assert ours == set(configured)
    for name in ours:
        assert 0 < configured[name]["soft_time_limit"] < configured[name]["time_limit"], name


def test_the_submitting_tasks_limits_follow_the_setting() -> None:
    assert set(SUBMITTING_TASKS) == {"nbq.generate", "nbq.submit"}
    default = limits(Settings())
    short = limits(
        load_settings(submit_time_limit_s=12, http_connect_timeout_s=1, http_read_timeout_s=5)
    )
    for name in SUBMITTING_TASKS:
        assert default[name] == {"soft_time_limit": 60, "time_limit": 90}
        assert short[name] == {"soft_time_limit": 8, "time_limit": 12}
    assert short["nbq.poll"] == default["nbq.poll"]


def test_a_submit_limit_whose_soft_limit_would_cut_a_create_off_is_refused() -> None:
    # One create call may take NBQ_HTTP_CONNECT_TIMEOUT_S + NBQ_HTTP_READ_TIMEOUT_S (5 + 15)
    with pytest.raises(ConfigError, match=r"^NBQ_SUBMIT_TIME_LIMIT_S: .*= 20 s"):
        load_settings(submit_time_limit_s=24)  # soft limit 16 s
    with pytest.raises(ConfigError, match="NBQ_SUBMIT_TIME_LIMIT_S"):
        load_settings(submit_time_limit_s=0)
    assert load_settings(submit_time_limit_s=36).submit_time_limit_s == 36
