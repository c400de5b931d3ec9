"""Fault-suite fixtures: a stack whose reconciler and timeouts are tuned for fast recovery."""

from __future__ import annotations

import pytest

from tests.support.stack import Stack


@pytest.fixture
def fast_stack(stack: Stack) -> Stack:
    """The shared ``stack`` with download recovery in seconds, not half a minute.

    The reconciler re-drives a download idle for ``max(stuck_after, 1.5 x timeout)``.
    """
    stack.overrides["NBQ_DOWNLOAD_TIMEOUT_S"] = "4"
    return stack
