"""Measure one job's path through the worker: messages, modules and module-to-module hops.

Run from a checkout (it borrows the tests' servers: a redis-server, the emulator, moto S3):

    PYTHONPATH=$PWD python ops/scripts/job_path.py       # JOB_PATH_EDGES=1: list the edges

One job (one poll, one image) enters as a raw ``nbq.generate`` and is carried message by
message through the real Celery tasks (``Task.apply`` in this process; every message a
task sends is captured instead of published, then run in turn; the poll only after the
emulator's task has finished, so exactly one poll answers ``completed``). A first job warms
imports and caches; the second is measured with ``sys.setprofile``:

- **messages**: the ``nbq.*`` messages the job's path is made of;
- **modules**: distinct ``workers/`` modules whose functions ran for the job (code run at
  import time is not counted);
- **hops**: distinct caller-module → callee-module call edges between two ``workers/``
  modules, i.e. the places a reader must follow control from one file into another.

The same method is used before and after a change (issue 24's "hops and modules").
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORKERS = str(ROOT / "workers")


_SEEN: dict[str, str | None] = {}


def _module(filename: str) -> str | None:
    """``workers/x.py`` for a file of the package (imported through the
    ``nanobanana_queue/workers`` link or not); None for anything else."""
    if filename not in _SEEN:
        real = os.path.realpath(filename)
        _SEEN[filename] = (
            str(Path(real).relative_to(ROOT)) if real.startswith(WORKERS + os.sep) else None
        )
    return _SEEN[filename]


class PathProfile:
    """Modules run and module-to-module call edges, from ``sys.setprofile``."""

    def __init__(self) -> None:
        self.modules: set[str] = set()
        self.edges: set[tuple[str, str]] = set()

    def __call__(self, frame: FrameType, event: str, _: Any) -> None:
        if event != "call" or frame.f_code.co_name == "<module>":
            return
        callee = _module(frame.f_code.co_filename)
        if callee is None:
            return
        self.modules.add(callee)
        caller_frame = frame.f_back
        while caller_frame is not None and _module(caller_frame.f_code.co_filename) is None:
            caller_frame = caller_frame.f_back  # through library frames (Celery, redis-py)
        if caller_frame is not None:
            caller = _module(caller_frame.f_code.co_filename)
            if caller is not None and caller != callee:
                self.edges.add((caller, callee))


def main() -> None:
    from tests.support.emulator_server import EmulatorServer
    from tests.support.redis_server import RedisServer
    from tests.support.s3_server import S3Server

    tmp = Path(tempfile.mkdtemp(prefix="nbq-job-path-"))
    redis_server = RedisServer(dir=tmp)
    emulator = EmulatorServer(log_dir=tmp)
    s3 = S3Server(dir=tmp)
    for server in (redis_server, emulator, s3):
        server.start()
    try:
        os.environ.update(
            NBQ_BROKER_URL=redis_server.url,
            NBQ_EVOLINK_BASE_URL=emulator.url,
            NBQ_EVOLINK_API_KEY=emulator.api_key,
            NBQ_RESULT_URL_PRIVATE_HOSTS="127.0.0.1",
            NBQ_RESULT_URL_ALLOW_HTTP="true",
            NBQ_S3_ENDPOINT=s3.endpoint,
            NBQ_S3_ACCESS_KEY=s3.access_key,
            NBQ_S3_SECRET_KEY=s3.secret_key,
            NBQ_S3_BUCKET=s3.bucket,
            NBQ_TASK_EVENTS="false",
        )
        run(emulator, warm=True)
        profile = run(emulator, warm=False)
    finally:
        for server in (s3, emulator, redis_server):
            server.stop()
    assert profile is not None
    print(f"modules: {len(profile.modules)}")
    print(f"hops (distinct module → module call edges): {len(profile.edges)}")
    for module in sorted(profile.modules):
        print(f"  {module}")
    if os.environ.get("JOB_PATH_EDGES"):  # the edges too, to compare two runs
        for caller, callee in sorted(profile.edges):
            print(f"  edge {caller} -> {callee}")


def run(emulator: Any, *, warm: bool) -> PathProfile | None:
    import nanobanana_queue.workers.tasks  # noqa: F401 - registers the nbq.* tasks
    from nanobanana_queue.workers.app import app

    sent: list[tuple[str, dict[str, Any]]] = []

    def capture(name: str, args: Any = None, kwargs: Any = None, *_: Any, **__: Any) -> None:
        sent.append((name, dict(kwargs or {})))

    app.send_task = capture
    sent.append(("nbq.generate", {"request": {"prompt": "path", "quality": "1K"}}))
    profile = PathProfile()
    names: list[str] = []
    while sent:
        name, kwargs = sent.pop(0)
        if name == "nbq.poll":
            _wait_final(emulator, str(kwargs.get("evolink_task_id")))
        names.append(name)
        if not warm:
            sys.setprofile(profile)
        try:
            result = app.tasks[name].apply(kwargs=kwargs)
        finally:
            sys.setprofile(None)
        if result.state != "SUCCESS":
            raise SystemExit(f"{name} ended {result.state}: {result.result!r}")
    if not warm:
        print(f"messages: {len(names)} ({' → '.join(names)})")
        return profile
    return None


def _wait_final(emulator: Any, task_id: str) -> None:
    deadline = time.monotonic() + 30
    while emulator.task(task_id).get("status") not in ("completed", "failed"):
        if time.monotonic() > deadline:
            raise SystemExit(f"emulator task {task_id} never finished")
        time.sleep(0.05)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
