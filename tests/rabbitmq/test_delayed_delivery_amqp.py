"""Native delayed delivery binds every queue of ours, whichever queues a worker consumes.

Celery's own step binds every queue in ``task_queues`` but declares none: a worker
started with ``-Q submit`` failed on ``notify`` (not declared until a notify worker
started), logged CRITICAL "Native delayed delivery will not be available", and a
countdown message to ``notify`` found no binding at the end of the delay ladder: dropped
(celery#9960). ``workers/guard/delayed.py`` declares each queue before binding it.
"""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.deadletters import DeadLetterStore
from tests.support import rabbitmq
from tests.support.procs import wait_until
from tests.support.rabbitmq import Vhost
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


def bound_to_delayed_delivery(vhost: Vhost) -> set[str]:
    """Destinations bound to ``celery_delayed_delivery`` (our topic exchanges)."""
    out = rabbitmq.ctl("list_bindings", "-p", vhost.name, "source_name", "destination_name",
                       "--quiet", "--no-table-headers", check=True).stdout  # fmt: skip
    pairs = (line.split("\t")[:2] for line in out.splitlines() if "\t" in line)
    return {dest for source, dest in pairs if source == "celery_delayed_delivery"}


def test_a_one_queue_worker_binds_every_queue_and_a_countdown_to_an_undeclared_queue_arrives(
    amqp_stack: Stack, vhost: Vhost
) -> None:
    stack = amqp_stack
    # Given a worker consuming only `submit`: nobody has declared `notify` before it
    stack.start_worker(queues="submit", name="sub")
    wait_until(
        lambda: {"submit", "poll", "download", "notify"} <= bound_to_delayed_delivery(vhost),
        timeout_s=60,
        what="every queue of ours bound to the delayed-delivery exchange",
    )
    logs = stack.worker_logs()
    assert "Native delayed delivery will not be available" not in logs, logs[-3000:]
    assert "Failed to bind queue" not in logs, logs[-3000:]
    assert vhost.queue_types().get("notify") == "quorum"
    # When a countdown message goes to `notify`, which no notify worker has declared yet
    # (an unknown task name: the notify worker's guard dead-letters it, our proof of arrival)
    app = create_app(stack.settings())
    app.send_task("nbq.delayed_probe", args=[], queue="notify", countdown=2)
    wait_until(
        lambda: vhost.queue_counts().get("notify", 0) == 1,
        timeout_s=60,
        what="the countdown message waiting in `notify`",
    )
    # Then once a worker for `notify` starts, it receives that message
    stack.start_worker(queues="notify", name="ntf")
    store = DeadLetterStore.from_settings(stack.settings())
    wait_until(
        lambda: [letter.task for letter in store.list()] == ["nbq.delayed_probe"],
        timeout_s=60,
        what="the countdown message received by the notify worker",
    )
    assert "Native delayed delivery will not be available" not in stack.worker_logs()
