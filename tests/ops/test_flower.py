"""Flower on real processes: quota errors visible as retries, event metrics, auth enforced.

One real worker, one Flower started through ``nbq flower`` with basic auth, the emulator
answering 402 until credits come back. Flower only sees what the workers' events say, so
these tests check that the project's Celery config really emits them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from nanobanana_queue.workers.contract import TASK_DOWNLOAD, TASK_GENERATE, TASK_POLL
from nanobanana_queue.workers.jobs.state import JobState
from tests.support.procs import free_port, port_open, start, stop, wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

AUTH = ("flower-user", "flower-pass")
SCRAPER = ("prometheus", "scrape-pass")
#: Two accounts, as docker-compose.yml sets them: people and Prometheus.
BASIC_AUTH = f"{AUTH[0]}:{AUTH[1]},{SCRAPER[0]}:{SCRAPER[1]}"
QUOTA_ERRORS = ("QuotaExceededError", "QuotaBreakerOpenError")


@dataclass
class Flower:
    """A running ``nbq flower`` and a small authenticated client for its HTTP API."""

    url: str
    proc: subprocess.Popen[bytes]

    def get(
        self, path: str, *, auth: tuple[str, str] | None = AUTH, **params: Any
    ) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, auth=auth, timeout=10, trust_env=False)

    def tasks(self, **params: Any) -> dict[str, dict[str, Any]]:
        response = self.get("/api/tasks", limit=10000, **params)
        response.raise_for_status()
        return dict(response.json())

    def metrics(self) -> str:
        response = self.get("/metrics")
        response.raise_for_status()
        return response.text


def events_total(metrics_text: str, *, task: str, kind: str) -> float:
    """Sum of ``flower_events_total`` for one task name and event type over all workers."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith("flower_events_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("task") == task and labels.get("type") == kind:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def flower(stack: Stack) -> Iterator[Flower]:
    """Flower with basic auth on a free loopback port, connected to the stack's broker."""
    port = free_port()
    proc = start(
        [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "flower",
         "--address", "127.0.0.1", "--port", str(port)],
        env={**stack.env(), "NBQ_FLOWER_BASIC_AUTH": BASIC_AUTH},
        log=stack.dir / "flower.log",
    )  # fmt: skip

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"flower exited with {proc.returncode}")
        return port_open(port)

    wait_until(up, timeout_s=60, what="flower")
    yield Flower(url=f"http://127.0.0.1:{port}", proc=proc)
    stop(proc, timeout_s=15)


def wait_flower_sees_worker(flower: Flower) -> None:
    """Flower's event receiver is live once a worker heartbeat has reached it."""
    wait_until(
        lambda: bool(re.search(r"^flower_worker_online\{[^}]*\} 1\.0$", flower.metrics(), re.M)),
        timeout_s=30,
        interval_s=0.25,
        what="flower to receive worker events",
    )


def test_quota_errors_show_in_flower_as_retries_and_every_job_still_completes(
    stack: Stack, flower: Flower
) -> None:
    # Given a worker whose first poll comes long before the image is ready (jobs re-poll),
    # a Flower receiving its events and an API out of credits
    stack.overrides["NBQ_POLL_FIRST_FACTOR"] = "0.1"
    stack.start_worker(name="w1")
    wait_flower_sees_worker(flower)
    stack.emulator.set_credits(0)
    producer = stack.producer()
    job_ids = [producer.enqueue({"prompt": f"quota {i}", "quality": "1K"}).job_id for i in range(3)]

    # When the submits hit the 402, Flower lists a retrying task whose exception names quota
    seen: dict[str, Any] = {}

    def quota_retry_visible() -> bool:
        for uuid, task in flower.tasks(state="RETRY").items():
            if any(name in str(task.get("exception")) for name in QUOTA_ERRORS):
                seen.update(task, uuid=uuid)
                return True
        return False

    wait_until(quota_retry_visible, timeout_s=30, interval_s=0.25, what="a quota retry")
    assert seen["name"] == TASK_GENERATE
    assert seen["worker"] == "w1@test"
    print("flower quota task:", {k: seen.get(k) for k in ("name", "state", "exception", "retries")})

    # Then, credits restored, every job completes
    stack.emulator.set_credits(None)
    records = stack.wait_all(producer, job_ids, timeout_s=90)
    assert {r.state for r in records.values()} == {JobState.STORED}

    # And Flower counts the successes of every stage and the quota retries
    expected_polls = sum(r.polls for r in records.values())

    def counted() -> bool:
        text = flower.metrics()
        return (
            events_total(text, task=TASK_DOWNLOAD, kind="task-succeeded") >= len(job_ids)
            and events_total(text, task=TASK_POLL, kind="task-succeeded") >= expected_polls
        )

    wait_until(counted, timeout_s=20, interval_s=0.25, what="flower to count the successes")
    text = flower.metrics()
    generate_done = events_total(text, task=TASK_GENERATE, kind="task-succeeded")
    assert generate_done == len(job_ids)
    quota_events = events_total(text, task=TASK_GENERATE, kind="task-retried") + events_total(
        text, task=TASK_GENERATE, kind="task-failed"
    )
    assert quota_events >= 1
    print(
        "flower events:",
        {
            (task, kind): events_total(text, task=task, kind=kind)
            for task in (TASK_GENERATE, TASK_POLL, TASK_DOWNLOAD)
            for kind in ("task-received", "task-started", "task-succeeded", "task-retried")
        },
        "polls recorded:",
        expected_polls,
    )

    # And the countdown polls never show as retries or failures (a re-poll is a new task)
    assert expected_polls > len(job_ids), "no job was polled while still generating"
    for kind in ("task-retried", "task-failed"):
        assert events_total(text, task=TASK_POLL, kind=kind) == 0
    polls = flower.tasks(taskname=TASK_POLL)
    assert len(polls) == expected_polls
    assert {t["state"] for t in polls.values()} == {"SUCCESS"}
    assert all(not t.get("retries") for t in polls.values())

    # And no secret reaches Flower: task args/kwargs carry job ids and poll tokens only
    everything_flower_shows = flower.get("/api/tasks", limit=10000).text + text
    for secret in (stack.env()["NBQ_EVOLINK_API_KEY"], stack.env()["NBQ_S3_SECRET_KEY"]):
        assert secret not in everything_flower_shows


def test_flower_refuses_requests_without_valid_credentials_but_serves_both_accounts(
    stack: Stack, flower: Flower
) -> None:
    for path in ("/api/tasks", "/api/workers", "/metrics", "/"):
        assert flower.get(path, auth=None).status_code == 401, path
        assert flower.get(path, auth=("flower-user", "wrong")).status_code == 401, path
    assert flower.get("/api/tasks").status_code == 200
    assert flower.get("/metrics", auth=SCRAPER).status_code == 200
    # The liveness probe (docker-compose healthcheck) needs no account and tells nothing
    health = flower.get("/healthcheck", auth=None)
    assert (health.status_code, health.text) == (200, "OK")


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``nbq flower ...`` with the stack's settings and no NBQ_FLOWER_BASIC_AUTH anywhere."""
    env = {**os.environ, **stack.env()}
    env.pop("NBQ_FLOWER_BASIC_AUTH", None)
    return subprocess.run(
        [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "flower", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_flower_without_auth_refuses_a_non_loopback_address(stack: Stack) -> None:
    result = run_cli(stack, "--no-auth", "--address", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode != 0
    assert "--no-auth" in result.stderr and "127.0.0.1" in result.stderr


def test_flower_without_basic_auth_setting_refuses_and_names_the_variable(stack: Stack) -> None:
    result = run_cli(stack, "--address", "127.0.0.1", "--port", str(free_port()))
    assert result.returncode != 0
    assert "NBQ_FLOWER_BASIC_AUTH" in result.stderr
