"""Helpers to run real processes for tests: free ports, waiting, clean shutdown.

``free_port``/``port_open`` are the dev stack's own (one definition for tests, ``nbq dev``
and the benchmarks).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from producers.devstack.procs import free_port, port_open, wait_until

__all__ = ["ROOT", "free_port", "port_open", "python_exe", "start", "stop", "wait_until"]

ROOT = Path(__file__).resolve().parents[2]


def start(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a process in its own session (so a kill reaches its children)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(
        args,
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=str(cwd or ROOT),
        start_new_session=True,
    )


def stop(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout_s: float = 15.0
) -> None:
    """Signal the whole process group and wait; SIGKILL if it will not go."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def python_exe() -> str:
    return sys.executable
