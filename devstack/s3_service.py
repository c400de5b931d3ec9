"""S3 for the dev stack: moto's server mode on loopback, with the bucket created."""

from __future__ import annotations

import sys

from nanobanana_queue.devstack.procs import Supervisor, port_open
from nanobanana_queue.workers.settings import Settings

#: Seconds moto gets to listen (its first import is slow on a busy machine).
START_TIMEOUT_S = 60.0


def start_s3(supervisor: Supervisor, *, port: int, settings: Settings) -> str:
    """Start moto on ``port``, create ``settings.s3_bucket``; returns the endpoint URL."""
    child = supervisor.start(
        "s3",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        extra_env={"AWS_DEFAULT_REGION": settings.s3_region},
    )
    supervisor.wait_ready(child, lambda: port_open(port), timeout_s=START_TIMEOUT_S)
    from nanobanana_queue.workers.storage.s3 import ObjectStore

    store = ObjectStore.from_settings(settings)

    def bucket_ready() -> bool:
        store.ensure_bucket()
        return True

    supervisor.wait_ready(child, bucket_ready, timeout_s=START_TIMEOUT_S)
    return f"http://127.0.0.1:{port}"
