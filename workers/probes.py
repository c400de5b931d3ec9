"""Health probes that cost the broker nothing: a heartbeat file the process keeps fresh.

Why files: ``celery inspect ping`` broadcasts over the broker to every worker and waits
for replies (celery#4079); run by every replica's probe every few seconds it loads the
broker it is meant to check, and it fails when the broker is slow rather than when the
worker is wedged. Here the worker's own event loop touches a file (``workers/heartbeat.py``,
a consumer bootstep); the probe only reads that file's age. Nothing is sent anywhere.

The files, in ``NBQ_HEALTH_DIR`` (``/tmp/nbq-health``; one directory per process):

- ``<name>.alive``: JSON ``{"interval_s": 5.0, "pid": 7}`` written when the loop starts;
  its modification time is touched every ``interval_s`` while the loop turns. **Live**
  means the last touch is at most ``missed`` intervals old.
- ``<name>.ready``: exists while the worker consumes its queues (removed when the
  consumer stops: connection lost, warm shutdown). **Ready** means live and this file.

The probe side is this module run as a program, standard library only (≈ 30 ms, no
settings, no broker or Redis client imported)::

    python -m workers.probes live              # exit 0 healthy, 1 not (one line why)
    python -m workers.probes ready
    python -m workers.probes live --name reconcile --missed 6
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: Where a process keeps its probe files unless ``NBQ_HEALTH_DIR`` says otherwise (the
#: image's ``/tmp`` is a writable tmpfs under a read-only root).
DEFAULT_HEALTH_DIR = "/tmp/nbq-health"  # noqa: S108  # nosec B108: per-container tmpfs
#: Intervals without a touch after which a process is not live (the probe's default).
DEFAULT_MISSED = 6
#: The worker's file name; the standalone reconciler's is "reconcile".
WORKER = "worker"
RECONCILE = "reconcile"


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: healthy or not, and the one line that says why."""

    healthy: bool
    reason: str


class Heartbeat:
    """The writing side: one process's ``<name>.alive`` and ``<name>.ready`` files."""

    def __init__(self, directory: str | Path, name: str, interval_s: float) -> None:
        self.dir = Path(directory)
        self.name = name
        self.interval_s = float(interval_s)
        self.alive = self.dir / f"{name}.alive"
        self.ready = self.dir / f"{name}.ready"

    def start(self) -> None:
        """Write the alive file (the interval the probe measures in) and touch it."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = json.dumps({"interval_s": self.interval_s, "pid": os.getpid()})
        tmp = self.alive.with_name(f".{self.alive.name}.{os.getpid()}")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, self.alive)  # a reader never sees half a file

    def beat(self) -> None:
        """One touch; rewrites the file if something removed it."""
        try:
            os.utime(self.alive)
        except FileNotFoundError:
            self.start()

    def mark_ready(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ready.touch()

    def mark_not_ready(self) -> None:
        self.ready.unlink(missing_ok=True)


def check_live(directory: str | Path, name: str, missed: int, now: float) -> Verdict:
    """Live when ``<name>.alive`` was touched at most ``missed`` of its intervals ago."""
    path = Path(directory) / f"{name}.alive"
    try:
        touched = path.stat().st_mtime
        interval_s = float(json.loads(path.read_text(encoding="utf-8"))["interval_s"])
    except FileNotFoundError:
        return Verdict(False, f"no heartbeat yet: {path} does not exist")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Verdict(False, f"unreadable heartbeat {path}: {type(exc).__name__}")
    age_s = now - touched
    limit_s = missed * interval_s
    if age_s > limit_s:
        return Verdict(
            False,
            f"stale: last beat {age_s:.1f} s ago, more than {missed} x {interval_s:g} s",
        )
    return Verdict(True, f"ok: last beat {age_s:.1f} s ago (every {interval_s:g} s)")


def check_ready(directory: str | Path, name: str, missed: int, now: float) -> Verdict:
    """Ready when live and consuming (``<name>.ready`` exists)."""
    live = check_live(directory, name, missed, now)
    if not live.healthy:
        return live
    if not (Path(directory) / f"{name}.ready").exists():
        return Verdict(False, "not consuming: the consumer is stopped or reconnecting")
    return Verdict(True, live.reason.replace("ok:", "ok, consuming:", 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nanobanana_queue.workers.probes",
        description="Exit 0 if the process's heartbeat file is fresh (and, for 'ready', "
        "it consumes); 1 otherwise. Reads one file; talks to no broker.",
    )
    parser.add_argument("check", choices=("live", "ready"))
    parser.add_argument("--name", default=WORKER, help="worker | reconcile")
    parser.add_argument("--dir", default=DEFAULT_HEALTH_DIR, help="the process's NBQ_HEALTH_DIR")
    parser.add_argument(
        "--missed",
        type=int,
        default=DEFAULT_MISSED,
        help="heartbeat intervals without a touch before unhealthy",
    )
    args = parser.parse_args(argv)
    check = check_live if args.check == "live" else check_ready
    verdict = check(args.dir, args.name, args.missed, time.time())
    print(verdict.reason)
    return 0 if verdict.healthy else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
