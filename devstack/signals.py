"""SIGINT and SIGTERM as one exception, so the stack is stopped by the same ``finally``."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Shutdown(BaseException):  # a request to stop, like KeyboardInterrupt
    """Ctrl-C or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


#: Signals that arrived inside :func:`deferred`, raised when it ends.
_pending: list[int] = []
_deferring = False


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    if _deferring:
        _pending.append(signum)
        return
    raise Shutdown(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold :class:`Shutdown` back until the block ends (e.g. between Popen and recording
    the child). Not a signal mask: children would inherit that and ignore SIGTERM."""
    global _deferring
    outer = _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = outer
    if not outer and _pending:
        signum = _pending[0]
        _pending.clear()
        raise Shutdown(signum)


@contextmanager
def shutdown_on_signals() -> Iterator[None]:
    """Inside: SIGINT/SIGTERM raise :class:`Shutdown`. Previous handlers restored after."""
    previous = {sig: signal.signal(sig, _raise_shutdown) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Inside: SIGINT/SIGTERM are ignored, so a second Ctrl-C cannot cut a cleanup short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
