"""Run a function in forked children with ``os.fork`` alone.

``multiprocessing``'s fork start method runs its after-fork hooks in each child, and
kombu registers one that closes every connection pool the parent holds: a pooled
connection some earlier test left waiting on a BRPOP makes that close read a reply
that never comes, and the child hangs. A plain ``os.fork`` runs only ``os.register_at_fork``
hooks — the child inherits the parent's clients, as a prefork pool child does, and the
test does not depend on what other tests left in the process.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from typing import Any


def run_forked(
    target: Callable[..., Any], args: tuple[Any, ...], *, processes: int, timeout_s: float
) -> list[int | None]:
    """Each child's exit status (0: ``target`` returned; None: still running at the
    deadline, then killed)."""
    pids = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test runner
            code = 1
            try:
                target(*args)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    deadline = time.monotonic() + timeout_s
    statuses: dict[int, int | None] = dict.fromkeys(pids)
    while any(status is None for status in statuses.values()) and time.monotonic() < deadline:
        for pid, status in statuses.items():
            if status is None:
                done, raw = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = os.waitstatus_to_exitcode(raw)
        time.sleep(0.02)
    for pid, status in statuses.items():
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    return [statuses[pid] for pid in pids]
