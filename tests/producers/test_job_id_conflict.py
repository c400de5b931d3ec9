"""A caller-chosen job id is an idempotency key for one request (issue 23, finding 9):
the same request again is the same job; a different request under that id is refused as
a conflict — Python (``JobIdConflictError``), the CLI (exit status 4) and the ingress (409,
tests/producers/ingress/test_jobs.py) — never silently answered with the old job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.cli.jobs_cmd import JOB_ID_CONFLICT_EXIT
from nanobanana_queue.producers.errors import JobIdConflictError
from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from tests.support.redis_server import RedisServer

RED = {"prompt": "a red fox", "quality": "1K"}
BLUE = {"prompt": "a blue fox", "quality": "1K"}


@pytest.fixture
def producer(redis_server: RedisServer) -> Producer:
    settings = Settings(broker_url=redis_server.url, evolink_api_key="k")
    return Producer(
        settings, celery_app=create_app(settings), runtime=Runtime.from_settings(settings)
    )


def test_the_same_request_under_the_same_id_is_the_same_job(producer: Producer) -> None:
    first = producer.enqueue(RED, job_id="fox-1", producer="alice")
    # Spelled differently (a default written out), the same request once validated
    again = producer.enqueue({**RED, "size": "auto"}, job_id="fox-1", producer="alice")
    assert first.job_id == again.job_id == "alice~fox-1"


def test_another_request_under_a_used_id_is_a_conflict_and_changes_nothing(
    producer: Producer,
) -> None:
    producer.enqueue(RED, job_id="fox-1", producer="alice")
    with pytest.raises(JobIdConflictError, match="fox-1") as refused:
        producer.enqueue(BLUE, job_id="fox-1", producer="alice")
    assert "a red fox" not in str(refused.value)  # the old request is not revealed
    assert producer.status("alice~fox-1").request["prompt"] == "a red fox"
    # Another producer's id space is untouched: bob's fox-1 is his own new job
    assert producer.enqueue(BLUE, job_id="fox-1", producer="bob").job_id == "bob~fox-1"


@pytest.mark.integration  # runs nbq as a process
def test_the_cli_exits_with_its_own_status_and_one_line(redis_server: RedisServer) -> None:
    env = {**os.environ, "NBQ_BROKER_URL": redis_server.url, "NBQ_EVOLINK_API_KEY": "k"}

    def submit(prompt: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "nanobanana_queue.producers.cli.main",
                "submit",
                prompt,
                "--job-id",
                "f-2",
                *list(extra),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert submit("a red fox").returncode == 0
    assert submit("a red fox").returncode == 0  # idempotent
    conflict = submit("a blue fox")
    assert conflict.returncode == JOB_ID_CONFLICT_EXIT == 4
    lines = conflict.stderr.strip().splitlines()
    assert len(lines) == 1 and "already used by a different request" in lines[0]
    as_json = submit("a blue fox", "--json")
    assert as_json.returncode == 4
    assert json.loads(as_json.stdout)["error"]["code"] == "job_id_conflict"
