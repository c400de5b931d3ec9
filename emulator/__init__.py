"""An in-memory emulator of the Evolink image API (create, query, result files).

Faithful to ``shared/evolink/CONTRACT.md`` and the vendor spec, plus a control API
under ``/_emulator/`` for fault injection and counters. See ``docs/emulator.md``.
"""

from emulator.app import create_app
from emulator.config import EmulatorConfig

__all__ = ["EmulatorConfig", "create_app"]
