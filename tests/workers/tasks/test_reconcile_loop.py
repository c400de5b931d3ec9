"""The standalone reconciler's loop (``nbq reconcile``) keeps its probe file fresh."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from nanobanana_queue.workers.probes import RECONCILE, Heartbeat
from nanobanana_queue.workers.tasks import reconcile


def test_every_pass_touches_the_heartbeat_even_one_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a loop whose passes fail (Redis away), each aging the file as if long ago
    stop = threading.Event()
    heartbeat = Heartbeat(tmp_path, RECONCILE, 30.0)
    seen: list[float] = []

    def failing_pass(*_: object) -> None:
        seen.append(heartbeat.alive.stat().st_mtime)  # written when the loop started
        os.utime(heartbeat.alive, (0, 0))
        if len(seen) == 2:
            stop.set()
        raise ConnectionError("redis away")

    monkeypatch.setattr(reconcile, "reconcile_once", failing_pass)
    monkeypatch.setattr(reconcile, "get_runtime", lambda: None)
    monkeypatch.setattr(reconcile, "dispatcher", lambda: type("D", (), {"send": None})())
    # When it runs two passes
    reconcile.reconcile_forever(0.0, stop=stop, heartbeat=heartbeat)
    # Then each failed pass was followed by a touch, and the file names its interval
    assert seen[1] > 0 and heartbeat.alive.stat().st_mtime > 0
    assert json.loads(heartbeat.alive.read_text())["interval_s"] == 30.0
