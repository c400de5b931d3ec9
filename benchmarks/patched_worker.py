"""``nbq worker`` with the patches this benchmark suite proposes, applied in memory.

Only for measuring a proposed fix before it lands (``--patched`` in benchmarks); the real
change belongs in the workers package. Currently: one SSL context per process for the
result-download client instead of one per download (``ssl.create_default_context``
loads the CA bundle each time: ~30 ms of CPU, the single largest per-job cost in B1).
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=True, trust_env=False)


def apply() -> None:
    from workers.security import netguard

    original = netguard.GuardedTransport.__init__

    def init(self: Any, policy: Any, *, verify: Any = True, **kwargs: Any) -> None:
        original(
            self, policy, verify=_default_ssl_context() if verify is True else verify, **kwargs
        )

    netguard.GuardedTransport.__init__ = init  # type: ignore[method-assign]


if __name__ == "__main__":
    apply()
    from producers.cli.main import app

    app()
