"""B1's baselines run plain Celery: the pipeline's consumer guard would refuse their tasks."""

from __future__ import annotations

from benchmarks.baseline_app import baseline_app


def test_a_baseline_app_uses_celerys_own_consumer() -> None:
    app = baseline_app("nbq-bench-test", "bench-test")

    assert app.conf.worker_consumer == "celery.worker.consumer:Consumer"


def test_a_baseline_app_keeps_the_pipelines_wire_settings() -> None:
    app = baseline_app("nbq-bench-test", "bench-test")

    assert app.conf.task_serializer == "json"
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_default_queue == "bench-test"
