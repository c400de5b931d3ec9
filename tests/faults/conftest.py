"""Fault-suite fixtures: a stack whose reconciler and timeouts are tuned for fast recovery."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator_server import EmulatorServer
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server
from tests.support.stack import Stack


@pytest.fixture
def fast_stack(stack: Stack) -> Stack:
    """The shared ``stack`` with download recovery in seconds, not half a minute.

    The reconciler re-drives a download idle for ``max(stuck_after, 1.5 x timeout)``.
    """
    stack.overrides["NBQ_DOWNLOAD_TIMEOUT_S"] = "4"
    return stack


@pytest.fixture
def nbq_cli(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Run ``nbq <args>`` in-process (CliRunner) against this stack's Redis."""
    from typer.testing import CliRunner

    from nanobanana_queue.producers.cli.main import app
    from nanobanana_queue.workers.runtime import reset_runtime
    from nanobanana_queue.workers.settings import get_settings

    def run(*args: str) -> Any:
        for name, value in stack.env().items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        reset_runtime()
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result

    yield run
    get_settings.cache_clear()
    reset_runtime()


@pytest.fixture
def own_s3_stack(
    tmp_path: Path,
    redis_server: RedisServer,
    session_emulator: EmulatorServer,
) -> Iterator[Callable[..., Stack]]:
    """``own_s3_stack(emulator=None, **s3_fields)``: a stack on its own S3 server.

    The session S3 server is shared by every test; an outage test takes a server of its
    own, free to stop or pause (``S3Server`` fields, e.g. distinctive credentials, go in
    ``s3_fields``; ``emulator`` replaces the session emulator). Whatever the test did, the
    server is resumed and stopped, and the workers stopped, afterwards.
    """
    made: list[Stack] = []

    def make(emulator: EmulatorServer | None = None, **s3_fields: Any) -> Stack:
        s3_dir = tmp_path / f"s3-{len(made)}"
        s3_dir.mkdir()
        server = S3Server(dir=s3_dir, **s3_fields)
        server.start()
        session_emulator.reset()
        the_stack = Stack(
            redis=redis_server, s3=server, emulator=emulator or session_emulator, dir=tmp_path
        )
        made.append(the_stack)
        return the_stack

    try:
        yield make
    finally:
        for the_stack in made:
            server = the_stack.s3
            try:
                if server.proc is not None and server.proc.poll() is None:
                    server.resume()  # a paused (SIGSTOPped) process ignores SIGTERM
            finally:
                the_stack.stop_workers()
                server.stop()
        session_emulator.reset()
