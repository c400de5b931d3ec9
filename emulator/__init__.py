"""An in-memory emulator of the Evolink image API (create, query, result files).

Faithful to ``shared/evolink/CONTRACT.md`` and the vendor spec, plus a control API
under ``/_emulator/`` for fault injection and counters. See ``docs/emulator.md``.
"""

from typing import Any

from nanobanana_queue.emulator.config import EmulatorConfig

__all__ = ["EmulatorConfig", "create_app"]


def __getattr__(name: str) -> Any:
    """``create_app`` (FastAPI) loads on first use: ``nbq``'s command list imports
    ``emulator.cli`` in installs without the [emulator] extra."""
    if name == "create_app":
        from nanobanana_queue.emulator.app import create_app

        return create_app
    raise AttributeError(f"module 'emulator' has no attribute {name!r}")
