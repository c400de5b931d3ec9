"""A test-owned Redis Cluster: 3 masters (optionally each with a replica) on free ports.

``redis-server --cluster-enabled yes`` per node, then ``redis-cli --cluster create``.
"""

from __future__ import annotations

import shutil
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
from tests.support.redis_server import redis_binary


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too and below 65536."""
    while True:
        port = free_port()
        if port <= 55535 and not port_open(port + 10000):
            return port


@dataclass
class RedisCluster:
    dir: Path
    masters: int = 3
    replicas_per_master: int = 0
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    def start(self) -> None:
        count = self.masters * (1 + self.replicas_per_master)
        self.ports = [cluster_port() for _ in range(count)]
        for port in self.ports:
            node_dir = self.dir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.procs[port] = start(
                [
                    redis_binary(),
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--dir", str(node_dir),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout", "1000",
                    "--appendonly", "yes",
                    "--save", "",
                    "--protected-mode", "no",
                ],
                log=node_dir / "redis.log",
            )  # fmt: skip
        for port in self.ports:
            wait_until(partial(port_open, port), what="cluster node")
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is needed to create a cluster"
        subprocess.run(
            [
                cli,
                "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", str(self.replicas_per_master),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        wait_until(self._ok, timeout_s=60, what="cluster_state:ok on every node")

    def _ok(self) -> bool:
        for port in self.procs:
            try:
                if self.node(port).cluster("info").get("cluster_state") != "ok":
                    return False
            except redis.RedisError:
                return False
        return True

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    def master_of(self, key: str) -> int:
        live = self.node(next(iter(self.procs)))  # a node still running
        slot = int(live.cluster("keyslot", key))
        slots: Any = live.execute_command("CLUSTER", "SLOTS")
        for start_slot, end_slot, master, *_ in slots:
            if start_slot <= slot <= end_slot:
                return int(master[1])
        raise LookupError(key)

    def replica_of(self, master_port: int) -> int:
        """The port of ``master_port``'s replica (the first one ``INFO replication`` names)
        once its link is up and it has caught up with the master."""

        def synced() -> int | None:
            info = self.node(master_port).info("replication")
            replica = info.get("slave0")
            if not replica or replica.get("state") != "online":
                return None
            if int(replica["offset"]) < int(info["master_repl_offset"]):
                return None
            return int(replica["port"])

        wait_until(lambda: synced() is not None, timeout_s=60, what="a replica in sync")
        port = synced()
        assert port is not None
        return port

    def kill(self, port: int) -> None:
        stop(self.procs.pop(port), sig=signal.SIGKILL)

    def wait_ok(self, timeout_s: float = 60) -> None:
        wait_until(self._ok, timeout_s=timeout_s, interval_s=0.2, what="the cluster to heal")

    def stop(self) -> None:
        for proc in self.procs.values():
            stop(proc)
        self.procs.clear()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(dir=tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_with_replicas(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(dir=tmp_path / "cluster", replicas_per_master=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
