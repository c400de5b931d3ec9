"""The exporter's totals on the real pipeline: jobs run by several worker processes."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, JobState
from nanobanana_queue.workers.metrics_exporter import build_registry
from nanobanana_queue.workers.settings import get_settings
from tests.support.metrics_guard import settled
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

JOBS = 8


def _scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(build_registry(stack.settings())).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_exporter_totals_match_the_jobs_run_by_separate_worker_pools(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the producer records metrics into the stack's Redis, as a deployed one would
    for key, setting in stack.env().items():
        monkeypatch.setenv(key, setting)
    get_settings.cache_clear()
    metrics.reset()
    metrics.set_enabled(True)
    # And one worker process per queue, as in docker-compose.yml
    stack.start_worker(queues="submit", pool="prefork", concurrency=2, name="submit")
    stack.start_worker(queues="poll", pool="threads", concurrency=4, name="poll")
    stack.start_worker(queues="download", pool="threads", concurrency=2, name="download")
    producer = stack.producer()
    try:
        # When a batch of jobs runs to the end
        job_ids = [
            producer.enqueue({"prompt": f"metrics {i}", "size": "1:1", "quality": "1K"}).job_id
            for i in range(JOBS)
        ]
        records = stack.wait_all(producer, job_ids)
    finally:
        get_settings.cache_clear()
        metrics.reset()
    assert {r.state for r in records.values()} == {JobState.STORED}

    # Then the scrape has exact totals written by all those processes (each writes its
    # finished tasks' events within NBQ_METRICS_FLUSH_S: the last ones of each process)
    def complete(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> bool:
        return (
            found.get(("nbq_jobs_state_total", (("state", "stored"),))) == JOBS
            and found.get(("nbq_polls_per_job_count", ())) == JOBS
            and _creates(found) == JOBS
        )

    samples = settled(lambda: _scrape(stack), complete)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("nbq_jobs_state_total", state="queued") >= JOBS
    assert value("nbq_jobs_state_total", state="stored") == JOBS
    assert value("nbq_jobs_state_total", state="failed") == 0
    assert value("nbq_enqueue_to_stored_seconds_count") == JOBS
    assert value("nbq_polls_per_job_count") == JOBS
    assert value("nbq_polls_per_job_sum") == sum(r.polls for r in records.values())
    stored_bytes = sum(o.size for r in records.values() for o in r.objects)
    assert value("nbq_bytes_stored_total") >= stored_bytes  # manifests are stored too
    for state in ACTIVE_STATES:
        assert value("nbq_jobs_in_state", state=state.value) == 0
    assert value("nbq_metrics_errors_total") == 0
    assert value("nbq_metrics_redis_up") == 1
    # And each create is counted once (the emulator saw exactly one per job)
    assert stack.emulator.stats()["creates_accepted"] == JOBS
    assert _creates(samples) == JOBS


def _creates(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "nbq_api_calls_total" and ("endpoint", "create") in labels
    )
