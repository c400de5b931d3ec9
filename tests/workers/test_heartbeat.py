"""The liveness heartbeat on a real worker process: healthy while it consumes, unhealthy
once its consumer is wedged (``SIGSTOP``), within a bound counted in heartbeat intervals;
ready only while it consumes (not while its broker is away).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.probes import WORKER, check_live
from nanobanana_queue.workers.settings import load_settings
from tests.support.procs import start, stop, wait_until
from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server(redis_process: RedisServer) -> RedisServer:
    """The probe test stops Redis: a server of its own."""
    return redis_process


pytestmark = [pytest.mark.integration]

#: Short, so the test takes seconds; the verdicts are counted in these intervals.
INTERVAL_S = 0.3
MISSED = 3


def probe(check: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """The command the Deployment's probe runs (ops/k8s/base), against ``directory``."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "nanobanana_queue.workers.probes", check),
            *("--dir", str(directory), "--missed", str(MISSED)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def worker(tmp_path: Path, redis_server: RedisServer) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        "NBQ_BROKER_URL": redis_server.url,
        "NBQ_EVOLINK_API_KEY": "test-key",
        "NBQ_HEALTH_DIR": str(tmp_path / "health"),
        "NBQ_HEALTH_INTERVAL_S": str(INTERVAL_S),
        "NBQ_RECONCILE_IN_WORKER": "false",
        "NBQ_TASK_EVENTS": "false",
    }
    proc = start(
        [
            *(
                sys.executable,
                "-m",
                "nanobanana_queue.producers.cli.main",
                "worker",
                "--queues",
                "poll",
            ),
            *("--pool", "threads", "--concurrency", "2", "--hostname", "poll@probe"),
        ],
        env=env,
        log=tmp_path / "worker.log",
    )
    yield proc
    os.kill(proc.pid, signal.SIGCONT)
    stop(proc, timeout_s=30)


def test_healthy_while_consuming_stale_once_wedged_and_ready_only_while_connected(
    tmp_path: Path, redis_server: RedisServer, worker: subprocess.Popen[bytes]
) -> None:
    health = tmp_path / "health"
    alive = health / f"{WORKER}.alive"
    # Given a real worker whose probes pass
    wait_until(lambda: probe("ready", health).returncode == 0, timeout_s=60, what="ready")
    # When it consumes (a message for no known task is taken off its queue by the guard)
    client = redis_server.client()
    app = create_app(load_settings(broker_url=redis_server.url))
    app.send_task("nbq.no_such_task", queue="poll")
    wait_until(lambda: client.llen("poll") == 0, timeout_s=30, what="the queue consumed")
    # Then the heartbeat keeps beating, interval after interval, and both probes pass
    beats: set[float] = set()

    def three_more_beats() -> bool:
        beats.add(alive.stat().st_mtime)
        return len(beats) >= 4

    wait_until(three_more_beats, timeout_s=30, interval_s=INTERVAL_S / 4, what="more beats")
    assert probe("live", health).returncode == 0
    assert probe("ready", health).returncode == 0

    # When the worker is frozen (its consumer loop can no longer turn)
    os.kill(worker.pid, signal.SIGSTOP)
    wait_until(
        lambda: _no_touch_for(alive, intervals=MISSED + 1),
        timeout_s=60,
        interval_s=INTERVAL_S / 2,
        what="the file to age",
    )
    last = alive.stat().st_mtime
    # Then the real probes fail, saying why
    live = probe("live", health)
    assert live.returncode == 1 and live.stdout.startswith("stale:"), live.stdout
    assert probe("ready", health).returncode == 1
    # And the bound, counted in intervals from the last beat the frozen worker wrote:
    # live up to MISSED intervals after it, not live past them
    assert check_live(health, WORKER, MISSED, last + (MISSED - 0.01) * INTERVAL_S).healthy
    assert not check_live(health, WORKER, MISSED, last + (MISSED + 0.01) * INTERVAL_S).healthy

    # When it is thawed, Then the same loop beats again and it is healthy again
    os.kill(worker.pid, signal.SIGCONT)
    wait_until(lambda: probe("ready", health).returncode == 0, timeout_s=30, what="thawed")

    # When its broker goes away, Then it is not ready (it consumes nothing) ...
    redis_server.stop()
    wait_until(lambda: probe("ready", health).returncode == 1, timeout_s=30, what="not ready")
    assert "not consuming" in probe("ready", health).stdout
    # ... and ready again once it has reconnected and consumes
    redis_server.start()
    wait_until(lambda: probe("ready", health).returncode == 0, timeout_s=60, what="reconnected")


def _no_touch_for(path: Path, *, intervals: int) -> bool:
    return time.time() - path.stat().st_mtime > intervals * INTERVAL_S
