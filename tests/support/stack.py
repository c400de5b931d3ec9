"""The whole system on real parts, for end-to-end and fault tests.

A test-owned redis-server, moto's S3 server, the emulator over HTTP and real Celery
worker processes (started through ``nbq worker``), wired together by ``NBQ_*`` variables
exactly as a user would.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from tests.support.emulator_server import EmulatorServer
from tests.support.procs import start, stop, wait_until
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server

API_KEY = "test-key"

#: Fast pipeline settings matched to the emulator's 0.01 time scale.
FAST = {
    "NBQ_POLL_MIN_INTERVAL_S": "0.05",
    "NBQ_POLL_MAX_INTERVAL_S": "0.5",
    "NBQ_DEFAULT_ESTIMATED_TIME_S": "0.3",
    "NBQ_RETRY_BACKOFF_BASE_S": "0.05",
    "NBQ_RETRY_BACKOFF_MAX_S": "0.5",
    "NBQ_BREAKER_PROBE_INTERVAL_S": "0.5",
    "NBQ_STUCK_AFTER_S": "3",
    "NBQ_RECONCILE_INTERVAL_S": "1",
    "NBQ_DOWNLOAD_TIMEOUT_S": "20",
    "NBQ_POLL_DEADLINE_S": "60",
    "NBQ_HTTP_READ_TIMEOUT_S": "5",
    "NBQ_VISIBILITY_TIMEOUT_S": "600",
}


@dataclass
class Stack:
    redis: RedisServer
    s3: S3Server
    emulator: EmulatorServer
    dir: Path
    overrides: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "NBQ_EVOLINK_API_KEY": API_KEY,
            "NBQ_EVOLINK_BASE_URL": self.emulator.url,
            "NBQ_BROKER_URL": self.redis.url,
            "NBQ_RESULT_URL_PRIVATE_HOSTS": "127.0.0.1",
            "NBQ_RESULT_URL_ALLOW_HTTP": "true",
            "NBQ_LOG_LEVEL": "INFO",
            **self.s3.env(),
            **FAST,
            **self.overrides,
        }

    def settings(self) -> Settings:
        values: dict[str, Any] = {k[4:].lower(): v for k, v in self.env().items()}
        for name in ("result_url_allowed_hosts", "result_url_private_hosts"):
            if name in values:
                values[name] = values[name].split(",")
        return Settings(**values)

    def producer(self) -> Producer:
        settings = self.settings()
        return Producer(
            settings, celery_app=create_app(settings), runtime=Runtime.from_settings(settings)
        )

    def start_worker(
        self,
        *,
        queues: str = "submit,poll,download",
        pool: str = "threads",
        concurrency: int = 4,
        name: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a worker and wait until it answers a ping."""
        name = name or f"w{len(self.workers) + 1}"
        proc = self.spawn_worker(
            queues=queues, pool=pool, concurrency=concurrency, name=name, extra_env=extra_env
        )
        app = create_app(self.settings())
        wait_until(
            lambda: any(f"{name}@test" in r for r in app.control.ping(timeout=0.5)),
            timeout_s=60,
            what=f"worker {name}",
        )
        return proc

    def spawn_worker(
        self,
        *,
        queues: str,
        pool: str,
        concurrency: int,
        name: str,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``nbq worker`` as ``<name>@test`` without waiting for it (a supervisor
        restarting it while the broker is down cannot wait either); its log is appended
        to ``worker-<name>.log``."""
        proc = start(
            [
                sys.executable,
                "-m",
                "nanobanana_queue.producers.cli.main",
                "worker",
                "--queues",
                queues,
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"{name}@test",
                "--loglevel",
                "INFO",
            ],
            env={**self.env(), **(extra_env or {})},
            log=self.dir / f"worker-{name}.log",
        )
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop(proc, timeout_s=30)
        self.workers.clear()

    def wait_all(
        self, producer: Producer, job_ids: list[str], timeout_s: float = 120
    ) -> dict[str, JobRecord]:
        records: dict[str, JobRecord] = {}

        def done() -> bool:
            for job_id in job_ids:
                if job_id not in records or not records[job_id].is_terminal:
                    records[job_id] = producer.status(job_id)
            return all(r.is_terminal for r in records.values())

        wait_until(done, timeout_s=timeout_s, interval_s=0.2, what="jobs to end")
        return records

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.dir.glob("worker-*.log"))


@pytest.fixture
def stack(
    tmp_path: Path,
    redis_process: RedisServer,
    session_s3: S3Server,
    session_emulator: EmulatorServer,
) -> Iterator[Stack]:
    """Workers on a redis-server of the test's own (fault tests kill it), the session's
    S3 server and emulator."""
    session_emulator.reset()
    the_stack = Stack(redis=redis_process, s3=session_s3, emulator=session_emulator, dir=tmp_path)
    yield the_stack
    the_stack.stop_workers()
    session_emulator.reset()
