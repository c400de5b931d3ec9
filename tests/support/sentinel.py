"""A test-owned Sentinel group: one master, one replica, three sentinels on free ports.

Fast failover for tests (``down-after-milliseconds 1000``, quorum 2). ``kill_master``
SIGKILLs the master (no shutdown, no last fsync: what a crashed host does);
``wait_failover`` waits until the sentinels name the replica as the new master.
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
from tests.support.redis_server import RedisServer, redis_binary

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

    def url(self, db: int = 0) -> str:
        """``sentinel://127.0.0.1:p1;sentinel://127.0.0.1:p2;sentinel://127.0.0.1:p3/<db>``."""
        parts = [f"sentinel://127.0.0.1:{port}" for port in self.sentinel_ports]
        return ";".join(parts) + f"/{db}"

    def env(self) -> dict[str, str]:
        return {
            "NBQ_BROKER_URL": self.url(),
            "NBQ_REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def start(self) -> None:
        self.master.start()
        self._start_replica()
        for n, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{n}.conf"
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                "protected-mode no\n"
                f"dir {self.dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinels.append(
                start(
                    [redis_binary(), str(conf), "--sentinel"],
                    log=self.dir / f"sentinel-{n}.log",
                )
            )
        for port in self.sentinel_ports:
            wait_until(partial(port_open, port), what="sentinel")
        wait_until(self._sentinels_see_replica, timeout_s=30, what="sentinels to see the replica")

    def _start_replica(self) -> None:
        replica = self.replica
        self.replica_proc = start(
            [
                redis_binary(),
                "--port",
                str(replica.port),
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
        return redis.Redis(host="127.0.0.1", port=port or self.sentinel_ports[0])

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


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    group = SentinelGroup(
        dir=tmp_path,
        master=RedisServer(dir=tmp_path / "master"),
        replica=RedisServer(dir=tmp_path / "replica"),
    )
    try:
        group.start()
        yield group
    finally:
        group.stop()
