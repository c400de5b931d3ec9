"""RabbitMQ fixtures: every test in a vhost of its own (or on a node of its own)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import rabbitmq
from tests.support.rabbitmq import RabbitNode, Vhost
from tests.support.stack import Stack

if not rabbitmq.available():
    pytest.skip("no RabbitMQ node answering rabbitmqctl", allow_module_level=True)


@pytest.fixture
def vhost() -> Iterator[Vhost]:
    """A vhost of this test's own on the machine's node, deleted afterwards."""
    made = Vhost().create()
    yield made
    made.delete()


def on_amqp(stack: Stack, vhost: Vhost) -> Stack:
    """The stack with RabbitMQ as broker; the job store stays on the stack's Redis."""
    stack.overrides["NBQ_BROKER_URL"] = vhost.url
    stack.overrides["NBQ_REDIS_URL"] = stack.redis.url
    return stack


@pytest.fixture
def amqp_stack(stack: Stack, vhost: Vhost) -> Iterator[Stack]:
    yield on_amqp(stack, vhost)
    stack.stop_workers()  # before the vhost goes


@pytest.fixture
def own_nodes() -> Iterator[Callable[[], RabbitNode]]:
    """``own_nodes()`` starts a RabbitMQ node of this test's own; all stopped afterwards.

    Its data lives under /tmp (not pytest's tmp_path: the rabbitmq user must reach it).
    """
    nodes: list[RabbitNode] = []
    base = Path(tempfile.mkdtemp(prefix="nbq-rabbit-"))
    base.chmod(0o755)  # mkdtemp makes it 0700: the rabbitmq user must enter it

    def start() -> RabbitNode:
        # A node that does not come up (a port picked by free_port taken by another test
        # process before the node bound it, or a start lost under load; CI saw one once) is
        # stopped and started once more on fresh ports, its log tail kept for the error.
        for attempt in range(2):
            node = RabbitNode(dir=base / f"n{len(nodes)}")
            nodes.append(node)
            try:
                return node.start()
            except TimeoutError as exc:
                tail = node.log_tail()
                node.stop()
                if attempt:
                    raise TimeoutError(f"{exc}; its log ends:\n{tail}") from exc
        raise AssertionError("unreachable")

    try:
        yield start
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(base, ignore_errors=True)
