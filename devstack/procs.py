"""The one process supervisor: for ``nbq dev``, the tests (``tests/support``) and the
benchmarks (``benchmarks/harness.py``).

Every child starts in its own session, so a Ctrl-C in the terminal reaches only the
parent, and a stop reaches the child's own children: SIGTERM to the group, then SIGKILL
after a timeout, always reaped. Ports are picked free on 127.0.0.1; readiness is polled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nanobanana_queue.devstack.errors import ChildExitedError, StartupError
from nanobanana_queue.devstack.signals import deferred

#: Seconds a child gets after SIGTERM before its whole group is SIGKILLed.
STOP_TIMEOUT_S = 15.0
#: The dev stack's children stop sooner (a person is waiting at the terminal).
STACK_STOP_TIMEOUT_S = 10.0
#: Lines of a child's log shown when it fails.
LOG_TAIL_LINES = 20


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    check: Callable[[], bool],
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``check`` until it is true; exceptions count as "not yet" until the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # retried until the deadline
            last_error = exc
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}: {last_error!r}")


@dataclass
class Child:
    """One supervised process and the file its output goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Supervisor:
    """Starts children, watches them, and stops them all in reverse start order."""

    log_dir: Path
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: list[str],
        *,
        extra_env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log = self.log_dir / f"{name}.log"
        # A stop signal between Popen and the append would orphan the child: hold it back.
        with deferred():
            return self._start(name, args, log, extra_env=extra_env, cwd=cwd)

    def _start(
        self,
        name: str,
        args: list[str],
        log: Path,
        *,
        extra_env: dict[str, str] | None,
        cwd: Path | None,
    ) -> Child:
        env = {**self.env, **(extra_env or {})}
        proc = start(args, env=env, log=log, cwd=cwd, inherit_env=False)
        child = Child(name=name, proc=proc, log=log)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, check: Callable[[], bool], *, timeout_s: float) -> None:
        """Poll ``check`` until true; fail early, with its log, if the child exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not child.alive():
                raise StartupError(
                    f"{child.name} exited with code {child.proc.returncode} "
                    f"while starting; last lines of {child.log}:\n"
                    f"{child.log_tail()}"
                )
            try:
                if check():
                    return
            except Exception:  # noqa: S110 - not ready yet; retried until the deadline
                pass
            time.sleep(0.1)
        raise StartupError(
            f"{child.name} not ready after {timeout_s:g}s; last lines of "
            f"{child.log}:\n{child.log_tail()}"
        )

    def check_alive(self) -> None:
        """Raise if any child exited on its own."""
        for child in self.children:
            if not child.alive():
                raise ChildExitedError(
                    f"{child.name} exited with code {child.proc.returncode};"
                    f" last lines of {child.log}:\n{child.log_tail()}"
                )

    def stop_all(self, timeout_s: float = STACK_STOP_TIMEOUT_S) -> None:
        """Stop every child, newest first (workers before the Redis they use)."""
        while self.children:
            stop(self.children.pop().proc, timeout_s=timeout_s)


def start(
    args: list[str],
    *,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
    inherit_env: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session, output appended to ``log`` (else discarded).

    ``env`` is laid over this process's environment, or is the whole environment when
    ``inherit_env`` is false (the dev stack passes exactly what its children get).
    """
    full_env = {**os.environ, **(env or {})} if inherit_env else dict(env or {})
    with open(log, "ab") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
        return subprocess.Popen(
            args,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def stop(
    proc: subprocess.Popen[bytes],
    *,
    sig: int = signal.SIGTERM,
    timeout_s: float = STOP_TIMEOUT_S,
) -> None:
    """Signal the child's group (SIGTERM), wait, then SIGKILL the group; always reaps."""
    if proc.poll() is not None:
        return
    _signal_group(proc, sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=10)
