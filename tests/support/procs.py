"""Real processes for tests: the dev stack's supervisor (``devstack/procs.py``), started
from the repository root by default.

One implementation for tests, ``nbq dev`` and the benchmarks; this module only adds the
tests' defaults.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nanobanana_queue.devstack.procs import free_port, port_open, stop, wait_until
from nanobanana_queue.devstack.procs import start as start_process

__all__ = [
    "ROOT",
    "LentServerError",
    "child_pids",
    "free_port",
    "port_open",
    "python_exe",
    "start",
    "stop",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]


def start(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a process in its own session (so a kill reaches its children), from ROOT."""
    return start_process(args, env=env, log=log, cwd=cwd or ROOT)


class LentServerError(RuntimeError):
    """A test tried to stop or restart a server the session lends to every test: it asks
    for a process of its own instead (``redis_process``, ``emulator_process``, ``s3_process``)."""


def python_exe() -> str:
    return sys.executable


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid`` (a prefork worker's pool processes), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name: state, ppid, ...
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)
