"""``nbq metrics`` over HTTP after a run with known outcomes: the counters say exactly that.

Five jobs are stored and two fail with a permanent task error (``content_policy_violation``
from the emulator's ``fail_task`` fault); a real ``nbq metrics`` process is scraped the way
Prometheus does it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, JobState
from nanobanana_queue.workers.settings import get_settings
from tests.support.metrics_guard import settled
from tests.support.procs import free_port, port_open, start, stop, wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

STORED = 5
REJECTED = 2
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def producer_metrics(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process records metrics (the producer's ``queued``) into the stack's Redis."""
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    from nanobanana_queue.workers import metrics

    metrics.reset()
    metrics.set_enabled(True)
    yield
    metrics.set_enabled(False)
    metrics.reset()
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def exporter(stack: Stack) -> Iterator[str]:
    """A running ``nbq metrics`` on a free loopback port; yields its /metrics URL."""
    port = free_port()
    proc: subprocess.Popen[bytes] = start(
        [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "metrics",
         "--address", "127.0.0.1", "--port", str(port)],
        env=stack.env(),
        log=stack.dir / "metrics.log",
    )  # fmt: skip

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"nbq metrics exited with {proc.returncode}")
        return port_open(port)

    wait_until(up, timeout_s=30, what="nbq metrics")
    yield f"http://127.0.0.1:{port}/metrics"
    stop(proc)


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10, trust_env=False)
    response.raise_for_status()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of a family's samples whose labels include ``labels`` (others summed over)."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= set(lab))


def test_exporter_counts_exactly_the_stored_and_failed_jobs_of_a_run(
    stack: Stack, producer_metrics: None, exporter: str
) -> None:
    # Given prompts marked FORBIDDEN end as content-policy failures at the API
    stack.emulator.add_fault(
        endpoint="create", action="fail_task", code="content_policy_violation", match="FORBIDDEN"
    )
    stack.start_worker(name="w1")
    producer = stack.producer()
    # When 5 ordinary and 2 forbidden jobs run to the end
    prompts = [f"metrics ok {i}" for i in range(STORED)]
    prompts += [f"metrics FORBIDDEN {i}" for i in range(REJECTED)]
    job_ids = [producer.enqueue({"prompt": p, "quality": "1K"}).job_id for p in prompts]
    records = stack.wait_all(producer, job_ids)
    states = sorted(r.state.value for r in records.values())
    assert states == ["failed"] * REJECTED + ["stored"] * STORED
    jobs = STORED + REJECTED
    polls = sum(r.polls for r in records.values())

    # Then `nbq metrics` has exactly those outcomes (a worker writes its finished tasks'
    # events within NBQ_METRICS_FLUSH_S: scraped until the last ones are in)
    def complete(found: Samples) -> bool:
        return (
            total(found, "nbq_jobs_state_total", state="stored") == STORED
            and total(found, "nbq_jobs_failed_total") == REJECTED
            and total(found, "nbq_polls_per_job_count") == jobs
            and total(found, "nbq_api_calls_total", endpoint="query") == polls
        )

    samples = settled(lambda: scrape(exporter), complete)
    assert total(samples, "nbq_jobs_state_total", state="stored") == STORED
    assert total(samples, "nbq_jobs_state_total", state="failed") == REJECTED
    assert total(samples, "nbq_jobs_state_total", state="queued") == jobs
    assert total(samples, "nbq_jobs_failed_total", reason="content_policy_violation") == REJECTED
    assert total(samples, "nbq_jobs_failed_total") == REJECTED
    # And every API call once: one create per job, one query per poll
    assert total(samples, "nbq_api_calls_total", endpoint="create", status="200") == jobs
    assert total(samples, "nbq_api_calls_total", endpoint="create") == jobs
    assert total(samples, "nbq_api_calls_total", endpoint="query", status="200") == polls
    stats = stack.emulator.stats()
    assert (stats["creates_accepted"], stats["queries_total"]) == (jobs, polls)
    # And the polls histogram has one observation per job that reached the API
    assert total(samples, "nbq_polls_per_job_count") == jobs
    assert total(samples, "nbq_polls_per_job_sum") == polls
    assert total(samples, "nbq_enqueue_to_stored_seconds_count") == STORED
    # And nothing is left in flight or on the queues
    for state in ACTIVE_STATES:
        assert total(samples, "nbq_jobs_in_state", state=state.value) == 0, state
    assert total(samples, "nbq_queue_length") == 0
    assert total(samples, "nbq_quota_breaker_open") == 0
    assert total(samples, "nbq_metrics_redis_up") == 1
    assert total(samples, "nbq_metrics_errors_total") == 0


def test_exporter_counts_each_result_download_as_a_file_call(
    stack: Stack, producer_metrics: None, exporter: str
) -> None:
    stack.start_worker(name="w1")
    producer = stack.producer()
    job_ids = [producer.enqueue({"prompt": f"file {i}", "quality": "1K"}).job_id for i in range(2)]
    records = stack.wait_all(producer, job_ids)
    assert {r.state for r in records.values()} == {JobState.STORED}
    samples = settled(
        lambda: scrape(exporter),
        lambda found: total(found, "nbq_api_calls_total", endpoint="file") == len(job_ids),
    )
    assert stack.emulator.stats()["file_downloads"] == len(job_ids)
    assert total(samples, "nbq_api_calls_total", endpoint="file", status="200") == len(job_ids)
