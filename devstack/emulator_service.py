"""The Evolink emulator for the dev stack, used unless a real API is configured."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

import httpx

from nanobanana_queue.devstack.procs import Supervisor
from nanobanana_queue.workers.settings import Settings

#: Real seconds per nominal second: a 1K image takes about one second.
TIME_SCALE = 0.05
#: Result images are capped to this many pixels (ratio kept): quick to make and store.
MAX_PIXELS = 512 * 512
#: Seconds the emulator gets to answer its health check.
START_TIMEOUT_S = 30.0

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def uses_real_api(settings: Settings) -> bool:
    """A real key and a non-loopback base URL mean: talk to the real API, no emulator."""
    key = settings.evolink_api_key
    if key is None or not key.get_secret_value():
        return False
    host = (urlsplit(settings.evolink_base_url).hostname or "").lower()
    return host not in LOOPBACK_HOSTS and not host.startswith("127.")


def start_emulator(supervisor: Supervisor, *, port: int, api_key: str) -> str:
    """Start ``python -m emulator`` on loopback, accepting only ``api_key``; returns its URL."""
    url = f"http://127.0.0.1:{port}"
    child = supervisor.start("emulator", [
        sys.executable, "-m", "nanobanana_queue.emulator",
        "--host", "127.0.0.1", "--port", str(port),
        "--time-scale", str(TIME_SCALE), "--max-pixels", str(MAX_PIXELS),
        "--api-key", api_key, "--allow-insecure-callbacks",
    ])  # fmt: skip

    def healthy() -> bool:
        response = httpx.get(f"{url}/_emulator/health", timeout=1.0, trust_env=False)
        return response.status_code == 200

    supervisor.wait_ready(child, healthy, timeout_s=START_TIMEOUT_S)
    return url
