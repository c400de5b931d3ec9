"""The probe files and their verdicts, as the kubelet or Docker would run them.

The verdicts are counted in heartbeat intervals: a process is live while its last touch is
at most ``missed`` intervals old, whatever the interval is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanobanana_queue.workers.probes import (
    DEFAULT_HEALTH_DIR,
    DEFAULT_MISSED,
    WORKER,
    Heartbeat,
    check_live,
    check_ready,
    main,
)
from nanobanana_queue.workers.settings import Settings

INTERVAL_S = 2.0


@pytest.fixture
def beating(tmp_path: Path) -> Heartbeat:
    heartbeat = Heartbeat(tmp_path, WORKER, INTERVAL_S)
    heartbeat.start()
    return heartbeat


def _touched(heartbeat: Heartbeat) -> float:
    return heartbeat.alive.stat().st_mtime


@pytest.mark.parametrize("missed", [1, 3, DEFAULT_MISSED])
def test_live_until_more_than_missed_intervals_pass_without_a_touch(beating, missed) -> None:
    last = _touched(beating)
    for intervals in (*range(missed), missed - 0.01):
        assert check_live(beating.dir, WORKER, missed, last + intervals * INTERVAL_S).healthy
    verdict = check_live(beating.dir, WORKER, missed, last + (missed + 0.01) * INTERVAL_S)
    assert not verdict.healthy
    assert verdict.reason.startswith("stale:")


def test_a_beat_makes_a_stale_file_live_again(beating) -> None:
    os.utime(beating.alive, (0, 0))
    assert not check_live(beating.dir, WORKER, 3, _touched(beating) + 10 * INTERVAL_S).healthy
    beating.beat()
    assert check_live(beating.dir, WORKER, 3, _touched(beating)).healthy


def test_a_beat_rewrites_a_removed_file(beating) -> None:
    beating.alive.unlink()
    beating.beat()
    assert json.loads(beating.alive.read_text())["interval_s"] == INTERVAL_S


def test_no_file_or_a_broken_file_is_not_live(tmp_path: Path) -> None:
    assert check_live(tmp_path, WORKER, 3, 0).reason.startswith("no heartbeat yet")
    (tmp_path / "worker.alive").write_text("{half")
    assert check_live(tmp_path, WORKER, 3, 0).reason.startswith("unreadable heartbeat")


def test_ready_is_live_and_consuming(beating) -> None:
    now = _touched(beating)
    assert not check_ready(beating.dir, WORKER, 3, now).healthy  # not consuming yet
    beating.mark_ready()
    assert check_ready(beating.dir, WORKER, 3, now).healthy
    assert not check_ready(beating.dir, WORKER, 3, now + 4 * INTERVAL_S).healthy  # wedged
    beating.mark_not_ready()
    assert check_ready(beating.dir, WORKER, 3, now).reason.startswith("not consuming")


def test_the_program_exits_0_when_healthy_and_1_when_not(beating, capsys) -> None:
    beating.mark_ready()
    assert main(["ready", "--dir", str(beating.dir)]) == 0
    assert capsys.readouterr().out.startswith("ok, consuming:")
    assert main(["live", "--dir", str(beating.dir), "--name", "reconcile"]) == 1
    assert "no heartbeat yet" in capsys.readouterr().out


def test_the_default_directory_is_the_settings_default() -> None:
    assert Settings.model_fields["health_dir"].default == DEFAULT_HEALTH_DIR


def test_the_probe_program_imports_no_broker_client_and_no_settings(beating) -> None:
    # Given a fresh interpreter running the probe exactly as a container probe would
    code = (
        "import sys, runpy; sys.argv = ['probes', 'live', '--dir', sys.argv[1]];"
        "rc = 0\n"
        "try:\n runpy.run_module('nanobanana_queue.workers.probes', run_name='__main__')\n"
        "except SystemExit as e:\n rc = e.code\n"
        "mods = sorted({m.split('.')[0] for m in sys.modules})\n"
        "print(rc, ' '.join(mods))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(beating.dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()[-1]
    rc, modules = out.split(" ", 1)
    # Then it answered, and nothing that can reach a broker or Redis was even imported
    assert rc == "0"
    loaded = set(modules.split())
    assert not loaded & {"celery", "kombu", "amqp", "redis", "pydantic", "httpx"}
