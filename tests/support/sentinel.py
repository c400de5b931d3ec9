"""A test-owned Sentinel group: one master, one replica, three sentinels on free ports.

Fast failover for tests (``down-after-milliseconds 1000``, quorum 2). ``kill_master``
SIGKILLs the master (no shutdown, no last fsync: what a crashed host does);
``wait_failover`` waits until the sentinels name the replica as the new master.

With ``tls`` every node listens on TLS only (data nodes and sentinels, ``port 0``) and
speaks TLS to the others (``tls-replication yes``); ``sentinel_password`` is the
sentinels' own (``requirepass``, ``sentinel-pass``), the data nodes' is the master's and
replica's ``password`` (``requirepass``/``masterauth``, the sentinels' ``auth-pass``).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.procs import free_port, port_open, start, stop, wait_until
from tests.support.redis_server import RedisServer
from tests.support.tls import TlsFiles, require_tls_redis_binary, write_certificates

MASTER_NAME = "nbqmaster"


@dataclass
class SentinelGroup:
    dir: Path
    master: RedisServer
    replica: RedisServer
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)
    replica_proc: subprocess.Popen[bytes] | None = None
    down_after_ms: int = 1000
    sentinel_password: str | None = None

    @property
    def tls(self) -> TlsFiles | None:
        return self.master.tls

    def url(self, db: int = 0) -> str:
        """``sentinel://127.0.0.1:p1;sentinel://127.0.0.1:p2;sentinel://127.0.0.1:p3/<db>``."""
        parts = [f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports]
        return ";".join(parts) + f"/{db}"

    def env(self) -> dict[str, str]:
        """What a user sets: the URL, the master's name, and TLS with the CA when on."""
        env = {"NBQ_BROKER_URL": self.url(), "NBQ_REDIS_SENTINEL_MASTER": MASTER_NAME}
        if self.tls is not None:
            env["NBQ_REDIS_SENTINEL_TLS"] = "true"
            env["NBQ_REDIS_TLS_CA_FILE"] = str(self.tls.ca)
        if self.master.password:
            env["NBQ_REDIS_PASSWORD"] = self.master.password
        if self.sentinel_password:
            env["NBQ_REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        return env

    def start(self) -> None:
        self.master.start()
        self._start_replica()
        for n, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{n}.conf"
            conf.write_text(
                (f"port 0\ntls-port {port}\n{self.tls.conf()}" if self.tls else f"port {port}\n")
                + "bind 127.0.0.1\n"
                "protected-mode no\n"
                f"dir {self.dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n" + self._password_conf()
            )
            self.sentinels.append(
                start(
                    [self.master.binary, str(conf), "--sentinel"],
                    log=self.dir / f"sentinel-{n}.log",
                )
            )
        for port in self.sentinel_ports:
            wait_until(partial(port_open, port), what="sentinel")
        wait_until(self._sentinels_see_replica, timeout_s=30, what="sentinels to see the replica")

    def _password_conf(self) -> str:
        lines = ""
        if self.master.password:
            lines += f"sentinel auth-pass {MASTER_NAME} {self.master.password}\n"
        if self.sentinel_password:
            lines += f"requirepass {self.sentinel_password}\n"
            lines += f"sentinel sentinel-pass {self.sentinel_password}\n"
        return lines

    def _start_replica(self) -> None:
        replica = self.replica
        password = ["--requirepass", replica.password] if replica.password else []
        password += ["--masterauth", replica.password] if replica.password else []
        self.replica_proc = start(
            [
                *replica.listen_args(),
                *password,
                "--bind",
                "127.0.0.1",
                "--dir",
                str(replica.dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--replicaof",
                "127.0.0.1",
                str(self.master.port),
            ],
            log=replica.dir / "redis.log",
        )
        replica.proc = self.replica_proc
        wait_until(
            lambda: (
                port_open(replica.port)
                and replica.client().info("replication").get("master_link_status") == "up"
            ),
            timeout_s=30,
            what="replica in sync",
        )

    def _sentinels_see_replica(self) -> bool:
        for port in self.sentinel_ports:
            try:
                replicas = self.sentinel(port).sentinel_slaves(MASTER_NAME)
                if not any(r.get("port") == self.replica.port for r in replicas):
                    return False
            except redis.RedisError:
                return False
        return True

    def sentinel(self, port: int | None = None) -> redis.Redis:
        tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.tls.ca)} if self.tls else {}
        return redis.Redis(
            host="127.0.0.1",
            port=port or self.sentinel_ports[0],
            password=self.sentinel_password,
            **tls,
        )

    def master_port(self) -> int:
        host_port: Any = self.sentinel().sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(host_port[1])

    def kill_master(self) -> None:
        """SIGKILL the current master (no shutdown save, no goodbye to the sentinels)."""
        assert self.master.proc is not None
        stop(self.master.proc, sig=signal.SIGKILL)
        self.master.proc = None

    def wait_failover(self, timeout_s: float = 60) -> None:
        wait_until(
            lambda: (
                self.master_port() == self.replica.port
                and self.replica.client().info("replication").get("role") == "master"
            ),
            timeout_s=timeout_s,
            interval_s=0.2,
            what="the sentinels to promote the replica",
        )

    def stop(self) -> None:
        for proc in self.sentinels:
            stop(proc)
        self.sentinels.clear()
        if self.replica_proc is not None:
            stop(self.replica_proc)
            self.replica_proc = None
        self.master.stop()


def _running_group(
    directory: Path,
    *,
    tls: TlsFiles | None = None,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> Iterator[SentinelGroup]:
    (directory / "master").mkdir()
    (directory / "replica").mkdir()
    group = SentinelGroup(
        dir=directory,
        master=RedisServer(dir=directory / "master", tls=tls, password=password),
        replica=RedisServer(dir=directory / "replica", tls=tls, password=password),
        sentinel_password=sentinel_password,
    )
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    yield from _running_group(tmp_path)


#: The TLS group's passwords (the data nodes', the sentinels'): tests check neither leaks.
TLS_DATA_PASSWORD = "data-node-secret-7f3a"
TLS_SENTINEL_PASSWORD = "sentinel-secret-91c2"


@pytest.fixture
def tls_sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """The same group on TLS only, from a private CA made here, with both passwords set."""
    require_tls_redis_binary()
    yield from _running_group(
        tmp_path,
        tls=write_certificates(tmp_path),
        password=TLS_DATA_PASSWORD,
        sentinel_password=TLS_SENTINEL_PASSWORD,
    )
