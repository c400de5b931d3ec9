"""What one health check costs: the heartbeat probe vs ``celery inspect ping``.

    python ops/scripts/probe_cost.py      # from a checkout, with the test extra installed

Starts a test-owned redis-server and three idle poll workers, then counts the Redis
commands each check sends (``INFO commandstats``, less the idle workers' own rate) and
its wall and CPU time: 20 runs of ``python -m workers.probes ready`` and 5 of
``celery inspect ping -d poll0@x`` (aimed at one worker, still broadcast to every
worker's pidbox).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's packages

from tests.support.procs import start, stop, wait_until
from tests.support.redis_server import RedisServer


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="nbq-probe-cost-"))
    redis = RedisServer(dir=work)
    redis.start()
    env = {
        "NBQ_BROKER_URL": redis.url,
        "NBQ_EVOLINK_API_KEY": "placeholder",
        "NBQ_HEALTH_DIR": str(work / "health"),
        "NBQ_RECONCILE_IN_WORKER": "false",
    }
    worker_args = [
        sys.executable,
        "-m",
        "nanobanana_queue.producers.cli.main",
        "worker",
        "--queues",
        "poll",
    ]
    workers = [
        start(
            [*worker_args, "--pool", "threads", "--concurrency", "2", "--hostname", f"poll{i}@x"],
            env=env,
            log=work / f"worker{i}.log",
        )
        for i in range(3)
    ]

    def commands() -> int:
        return sum(v["calls"] for v in redis.client().info("commandstats").values())

    def cost(argv: list[str], runs: int, idle_per_s: float) -> str:
        before, started = commands(), time.monotonic()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for _ in range(runs):
            subprocess.run(argv, capture_output=True, env={**os.environ, **env}, check=False)
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall_s = (time.monotonic() - started) / runs
        cpu_s = (
            cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
        ) / runs
        sent = (commands() - before - 1) / runs - idle_per_s * wall_s
        return f"{sent:5.1f} Redis commands, {wall_s * 1e3:4.0f} ms wall, {cpu_s * 1e3:4.0f} ms CPU"

    probe = [
        sys.executable,
        "-m",
        "nanobanana_queue.workers.probes",
        "ready",
        "--dir",
        str(work / "health"),
    ]
    ping = [sys.executable, "-m", "celery", "-A", "nanobanana_queue.workers.app", "inspect", "ping"]
    try:
        wait_until(lambda: subprocess.run(probe, capture_output=True).returncode == 0)
        time.sleep(2)
        idle = commands()
        time.sleep(5)
        idle_per_s = (commands() - idle - 1) / 5
        print(f"3 idle workers: {idle_per_s:.0f} Redis commands/s")
        print(f"nanobanana_queue.workers.probes ready: {cost(probe, 20, idle_per_s)} per check")
        aimed = [*ping, "-d", "poll0@x", "--timeout", "1"]
        print(f"celery inspect ping:  {cost(aimed, 5, idle_per_s)} per check")
    finally:
        for worker in workers:
            stop(worker)
        redis.stop()


if __name__ == "__main__":
    main()
