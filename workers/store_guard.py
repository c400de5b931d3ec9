"""Refuse to start a worker on a job store that would lose paid results silently.

Connected to Celery's ``worker_init`` (the main process, before any child forks): one
``CONFIG GET`` round trip per store. A refusal prints one line and exits with status 78
(EX_CONFIG); ``NBQ_ALLOW_VOLATILE_STORE=true`` turns it into a warning. The epoch marker
is read (or created) at the same moment, so a later flush is noticed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import signals

#: sysexits.h EX_CONFIG: a configuration problem, not a crash.
EXIT_CONFIG = 78


def _check_at_start(**_: Any) -> None:
    from nanobanana_queue.workers.jobs.durability import VolatileStoreError, check_settings_stores
    from nanobanana_queue.workers.runtime import get_runtime

    runtime = get_runtime()
    try:
        check_settings_stores(runtime.settings, store_client=runtime.redis)
    except VolatileStoreError as exc:
        print(f"nbq worker refused to start: {exc}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_CONFIG)
    runtime.epoch().check()


def install() -> None:
    signals.worker_init.connect(_check_at_start, weak=False)
