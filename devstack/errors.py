"""Errors of the dev stack.

::

    DevStackError            the stack could not start or lost a part while running
    ├── StartupError         a service did not come up (the message names it and its log)
    └── ChildExitedError     a supervised process exited on its own while the stack ran
"""

from __future__ import annotations


class DevStackError(Exception):
    """The dev stack cannot go on; the message says which part and why."""


class StartupError(DevStackError):
    """A service did not become ready in time or exited while starting."""


class ChildExitedError(DevStackError):
    """A supervised process exited while the stack was running."""
