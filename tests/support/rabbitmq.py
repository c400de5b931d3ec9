"""RabbitMQ for tests: a vhost of our own on the machine's node, or a node of our own.

The machine's node (127.0.0.1:5672, guest/guest) is shared: a test only ever adds and
deletes its own vhost there. A test that stops a broker starts a node of its own
(``RABBITMQ_NODENAME``, ports and data dir of its own) and stops that one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import wait_until

MACHINE_PORT = 5672


def available() -> bool:
    """``rabbitmqctl`` installed and the machine's node answering."""
    if shutil.which("rabbitmqctl") is None:
        return False
    try:
        return ctl("status", timeout_s=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ctl(
    *args: str, node: str | None = None, timeout_s: float = 60, check: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stdout}{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Vhost:
    """A vhost made for one test on a node (the machine's by default), deleted after."""

    port: int = MACHINE_PORT
    node: str | None = None
    name: str = field(default_factory=lambda: f"nbq-test-{uuid.uuid4().hex[:10]}")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{self.name}"

    def create(self) -> Vhost:
        ctl("add_vhost", self.name, node=self.node, check=True)
        ctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*", node=self.node,
            check=True)  # fmt: skip
        return self

    def delete(self) -> None:
        ctl("delete_vhost", self.name, node=self.node)

    def queue_types(self) -> dict[str, str]:
        """``name → type`` of every queue in the vhost (``rabbitmqctl list_queues``)."""
        out = ctl("list_queues", "-p", self.name, "name", "type", "--quiet", "--no-table-headers",
                  node=self.node, check=True).stdout  # fmt: skip
        return dict(line.split("\t")[:2] for line in out.splitlines() if "\t" in line)

    def queue_counts(self) -> dict[str, int]:
        out = ctl("list_queues", "-p", self.name, "name", "messages", "--quiet",
                  "--no-table-headers", node=self.node, check=True).stdout  # fmt: skip
        return {
            name: int(count)
            for name, count in (line.split("\t")[:2] for line in out.splitlines() if "\t" in line)
        }


@dataclass
class RabbitNode:
    """A RabbitMQ node of our own (own name, ports, data and log dirs): free to stop."""

    dir: Path
    name: str = field(default_factory=lambda: f"nbq-test-{uuid.uuid4().hex[:6]}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    started: bool = False

    def env(self) -> dict[str, str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        plugins = self.dir / "enabled_plugins"
        if not plugins.exists():
            plugins.write_text("[].\n")
        conf = self.dir / "rabbitmq"  # rabbitmq.conf of our own (the machine's stays alone)
        conf.with_suffix(".conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        if os.geteuid() == 0:  # rabbitmq-server drops to the rabbitmq user: it must write here
            for path in (self.dir, plugins, conf.with_suffix(".conf")):
                shutil.chown(path, "rabbitmq", "rabbitmq")
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONFIG_FILE": str(conf.with_suffix(".conf")),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
        }

    def start(self) -> RabbitNode:
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.started = True
        # Until the node registers with epmd, await_startup fails at once: retry it.
        wait_until(
            lambda: (
                ctl("await_startup", "--timeout", "60", node=self.name, timeout_s=90).returncode
                == 0
            ),
            timeout_s=150,
            interval_s=1.0,
            what=f"RabbitMQ node {self.name} to start",
        )
        return self

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the node's own log files (why a start failed)."""
        logs = sorted((self.dir / "log").glob("*.log")) if (self.dir / "log").exists() else []
        text = "\n".join(p.read_text(errors="replace") for p in logs)
        return "\n".join(text.splitlines()[-lines:]) or "(no log)"

    def stop_app(self) -> None:
        ctl("stop_app", node=self.name, check=True)

    def start_app(self) -> None:
        ctl("start_app", node=self.name, timeout_s=120, check=True)

    def wait_serving(self, timeout_s: float = 60) -> None:
        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(answers, timeout_s=timeout_s, what=f"RabbitMQ node {self.name}")

    def stop(self) -> None:
        if self.started:
            ctl("stop", node=self.name, timeout_s=90)
            self.started = False


def join_cluster(node: RabbitNode, seed: RabbitNode) -> None:
    """Make ``node`` a member of ``seed``'s cluster (``rabbitmqctl join_cluster``)."""
    ctl("stop_app", node=node.name, check=True)
    ctl("join_cluster", seed.name, node=node.name, timeout_s=120, check=True)
    ctl("start_app", node=node.name, timeout_s=120, check=True)


def quorum_members(vhost: Vhost, queue: str) -> tuple[str, list[str]]:
    """``(leader, members)`` of a quorum queue, from ``rabbitmqctl list_queues``."""
    out = ctl("list_queues", "-p", vhost.name, "name", "leader", "members", "--quiet",
              "--no-table-headers", node=vhost.node, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        name, leader, members = [*line.split("\t"), "", ""][:3]
        if name == queue:
            return leader, [m.strip(" []'\"") for m in members.strip("[]").split(",") if m]
    raise KeyError(queue)
