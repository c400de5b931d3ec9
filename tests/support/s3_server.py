"""A test-owned S3 server: moto's server mode in a subprocess on a free port.

State lives only in the moto process's memory. Two ways to take S3 away in a fault test:

* ``stop()`` / ``start()``: the port refuses connections while stopped (clients fail fast
  with "connection refused"). moto has no on-disk persistence, so a restarted server is
  **empty**: ``start()`` re-creates ``bucket`` but every object written before is gone.
  Assert on objects written after the restart, or re-upload.
* ``pause()`` / ``resume()``: SIGSTOP / SIGCONT. The port still accepts TCP connections but
  nothing answers, so clients hit their read timeout (a hung S3, not a dead one). State is
  kept, so objects written before the pause are still there after ``resume()``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import urllib3
from minio import Minio

from tests.support.procs import (
    LentServerError,
    free_port,
    port_open,
    python_exe,
    start,
    stop,
    wait_until,
)

#: moto accepts any credentials; these are fixed test values, never real secrets.
TEST_ACCESS_KEY = "test-access-key"
TEST_SECRET_KEY = "test-secret-key-not-real"
TEST_REGION = "us-east-1"


@dataclass
class S3Server:
    """A restartable moto S3 server owned by one test (or the session)."""

    dir: Path
    bucket: str = "nbq-test"
    port: int = field(default_factory=free_port)
    access_key: str = TEST_ACCESS_KEY
    secret_key: str = TEST_SECRET_KEY
    region: str = TEST_REGION
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self) -> None:
        """Start (or restart) the server and create ``bucket``; see the module docstring."""
        if self.proc is not None:
            return
        self.proc = start(
            [python_exe(), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            log=self.dir / "moto.log",
            env={"AWS_DEFAULT_REGION": self.region},
        )
        wait_until(lambda: port_open(self.port), what="moto S3 server", timeout_s=60)
        client = self.minio()
        if not client.bucket_exists(self.bucket):
            client.make_bucket(self.bucket)

    def stop(self) -> None:
        """Stop the server; everything it stored is lost."""
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open, nothing answers, state kept."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def minio(self) -> Minio:
        """A client with short timeouts and no retries, for test set-up and assertions."""
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=2.0, read=30.0), retries=urllib3.Retry(total=0)
        )
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
            http_client=http,
        )

    def env(self) -> dict[str, str]:
        """The ``NBQ_S3_*`` variables that point a worker process at this server."""
        return {
            "NBQ_S3_ENDPOINT": self.endpoint,
            "NBQ_S3_ACCESS_KEY": self.access_key,
            "NBQ_S3_SECRET_KEY": self.secret_key,
            "NBQ_S3_BUCKET": self.bucket,
            "NBQ_S3_SECURE": "false",
            "NBQ_S3_REGION": self.region,
        }

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in ``bucket`` (for assertions)."""
        objects = self.minio().list_objects(self.bucket, prefix=prefix or None, recursive=True)
        return sorted(str(o.object_name) for o in objects)


@dataclass
class LentS3Server(S3Server):
    """The session's S3 server lent to one test, with a bucket of this test's own:
    everything an ``S3Server`` does except stopping, pausing or restarting it (a test that
    does asks for ``s3_process``)."""

    def start(self) -> None:
        raise LentServerError("a lent S3 server is already running: ask for s3_process")

    def stop(self) -> None:
        raise LentServerError("the session's S3 server is lent: ask for s3_process")

    pause = resume = restart = stop


@pytest.fixture(scope="session")
def _lent_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(dir=tmp_path_factory.mktemp("s3-lent"))
    server.start()
    yield server
    server.stop()


_buckets = itertools.count(1)


@pytest.fixture
def s3_server(_lent_s3: S3Server) -> S3Server:
    """An S3 server with an empty bucket: the session's one, with a new bucket for this
    test. A test that stops, pauses or empties S3 asks for ``s3_process``."""
    lent = LentS3Server(dir=_lent_s3.dir, port=_lent_s3.port, proc=_lent_s3.proc,
                        bucket=f"nbq-test-{next(_buckets)}")  # fmt: skip
    lent.minio().make_bucket(lent.bucket)
    return lent


@pytest.fixture
def s3_process(tmp_path: Path) -> Iterator[S3Server]:
    """A server process of this test's own: it may stop, pause or restart it."""
    server = S3Server(dir=tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.resume()  # a paused process would ignore SIGTERM until continued
    server.stop()


@pytest.fixture(scope="session")
def session_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One server shared by the session; tests must use their own key prefixes."""
    server = S3Server(dir=tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()
