"""The Evolink API emulator as a real process (``python -m emulator``) on a free port."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.procs import (
    LentServerError,
    free_port,
    port_open,
    python_exe,
    start,
    stop,
    wait_until,
)

#: The options every test emulator runs with: fast, small images, loopback callbacks.
TEST_API_KEY = "test-key"
TEST_ARGS = (
    "--time-scale", "0.01",
    "--max-pixels", "65536",
    "--api-key", TEST_API_KEY,
    "--allow-insecure-callbacks",
)  # fmt: skip


@dataclass
class EmulatorServer:
    """A restartable emulator process and a small client for its control API."""

    log_dir: Path
    args: list[str] = field(default_factory=lambda: list(TEST_ARGS))
    #: Appended to ``args`` (e.g. ``["--credits", "10"]``).
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    api_key: str = TEST_API_KEY
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def start(self) -> None:
        self.proc = start(
            [python_exe(), "-m", "nanobanana_queue.emulator",
             "--host", self.host, "--port", str(self.port),
             *self.args, *self.extra_args],
            log=self.log_dir / "emulator.log",
        )  # fmt: skip
        wait_until(self._ready, timeout_s=30, what="emulator")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"emulator exited with {self.proc.returncode}")
        return port_open(self.port, self.host) and self._control("GET", "health") == {"ok": True}

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(
            method, f"{self.url}/_emulator/{path}", json=body, timeout=10, trust_env=False
        )
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return dict(self._control("GET", "stats"))

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        return dict(self._control("POST", "faults", rule))

    def faults(self) -> list[dict[str, Any]]:
        return list(self._control("GET", "faults"))

    def delete_fault(self, rule_id: str) -> None:
        """End one rule (a fault window closing); the others stay."""
        self._control("DELETE", f"faults/{rule_id}")

    def clear_faults(self) -> None:
        self._control("DELETE", "faults")

    def set_credits(self, credits: float | None) -> None:
        self._control("PUT", "credits", {"credits": credits})

    def set_idempotency(self, enabled: bool) -> None:
        self._control("PUT", "idempotency", {"enabled": enabled})

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self._control("GET", f"tasks/{task_id}"))

    def reset(self) -> None:
        self._control("POST", "reset")


@dataclass
class LentEmulator(EmulatorServer):
    """The session's emulator lent to one test, reset before and after it (tasks, faults,
    counters, credits, idempotency): everything an ``EmulatorServer`` does except
    stopping or restarting it (a test that does asks for ``emulator_process``)."""

    def start(self) -> None:
        raise LentServerError("a lent emulator is already running: ask for emulator_process")

    def stop(self) -> None:
        raise LentServerError("the session's emulator is lent: ask for emulator_process")

    restart = stop


@pytest.fixture(scope="session")
def _lent_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    server = EmulatorServer(log_dir=tmp_path_factory.mktemp("emulator-lent"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def emulator_server(_lent_emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """An emulator in its starting state (``TEST_ARGS``): the session's one, reset for this
    test. A test that stops it asks for ``emulator_process``; other options:
    ``emulator_factory``."""
    _lent_emulator.reset()
    yield LentEmulator(log_dir=_lent_emulator.log_dir, port=_lent_emulator.port,
                       proc=_lent_emulator.proc)  # fmt: skip
    _lent_emulator.reset()  # no fault rule or scheduled callback reaches a later test


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorServer]:
    """An emulator process of this test's own: it may stop or restart it."""
    server = EmulatorServer(log_dir=tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def emulator_factory(tmp_path: Path) -> Iterator[Callable[..., EmulatorServer]]:
    """``emulator_factory("--credits", "10")``: a started emulator with extra options."""
    started: list[EmulatorServer] = []

    def make(*extra_args: str) -> EmulatorServer:
        log_dir = tmp_path / f"emulator-{len(started)}"
        log_dir.mkdir()
        server = EmulatorServer(log_dir=log_dir, extra_args=list(extra_args))
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def session_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """Shared by many tests: call ``.reset()`` first if counters or faults matter."""
    server = EmulatorServer(log_dir=tmp_path_factory.mktemp("emulator"))
    server.start()
    yield server
    server.stop()
