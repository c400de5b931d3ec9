"""B1's baselines run plain Celery: the pipeline's consumer guard would refuse their tasks."""

from __future__ import annotations

import pytest

from benchmarks.baseline_app import baseline_app


@pytest.fixture(autouse=True)
def bench_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A benchmark's own broker (never used: nothing is sent)."""
    monkeypatch.setenv("NBQ_BROKER_URL", "redis://127.0.0.1:1/0")


def test_a_baseline_app_uses_celerys_own_consumer() -> None:
    app = baseline_app("nbq-bench-test", "bench-test")

    assert app.conf.worker_consumer == "celery.worker.consumer:Consumer"


def test_a_baseline_app_keeps_the_pipelines_wire_settings() -> None:
    app = baseline_app("nbq-bench-test", "bench-test")

    assert app.conf.task_serializer == "json"
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_default_queue == "bench-test"


def test_a_baseline_app_refuses_to_start_without_the_benchmarks_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NBQ_BROKER_URL")  # the default would be the machine's own Redis

    with pytest.raises(RuntimeError, match="stack"):
        baseline_app("nbq-bench-test", "bench-test")
