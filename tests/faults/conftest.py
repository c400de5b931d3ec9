"""Fault-suite fixtures: a stack whose reconciler and timeouts are tuned for fast recovery."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

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

    from producers.cli.main import app
    from workers.runtime import reset_runtime
    from workers.settings import get_settings

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
