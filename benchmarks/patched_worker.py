"""``nbq worker`` with fixes this benchmark suite proposes, applied in memory.

Only for measuring a proposed fix before it lands (``--patched`` in the benchmarks); the
real change belongs in the workers package. Empty now: the last one (one SSL context per
process for result downloads) landed in ``workers/security/netguard.py``. Add the next
experiment to ``apply()``.
"""

from __future__ import annotations


def apply() -> None:
    """Nothing to patch at the moment."""


if __name__ == "__main__":
    apply()
    from nanobanana_queue.producers.cli.main import app

    app()
