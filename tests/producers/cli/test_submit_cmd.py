"""``nbq submit`` / ``nbq wait`` as a person uses them: any-case quality, Ctrl-C that
keeps the job id, no volatile-store chatter on every command (issue 31, items 6, 7, 14)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobanana_queue.workers.cli.common import EXIT_INTERRUPTED
from tests.producers.cli.conftest import Nbq
from tests.support.redis_server import RedisServer


def _interrupt(*_: object, **__: object) -> None:
    raise KeyboardInterrupt


def test_quality_is_accepted_in_any_case_and_normalised(nbq: Nbq) -> None:
    done = nbq("submit", "a fox", "--quality", "2k", "--job-id", "q2k", "--json")
    assert done.code == 0, done.stderr
    assert nbq("status", "q2k", "--json").json()["request"]["quality"] == "2K"


def test_ctrl_c_during_submit_wait_prints_the_job_and_how_to_follow_it(
    nbq: Nbq, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nanobanana_queue.producers.cli.live.wait_for_job", _interrupt)
    done = nbq("submit", "a fox", "--job-id", "k1", "--wait")
    assert done.code == EXIT_INTERRUPTED
    assert "job k1 is queued and goes on" in done.stderr
    assert "nbq wait k1" in done.stderr and "nbq cancel k1" in done.stderr
    as_json = nbq("submit", "a fox", "--job-id", "k1", "--wait", "--json")
    assert as_json.code == EXIT_INTERRUPTED
    assert as_json.json()["error"]["code"] == "interrupted" and "k1" in as_json.stdout


def test_ctrl_c_during_batch_wait_prints_the_batch_and_its_job_ids(
    nbq: Nbq, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("nanobanana_queue.producers.cli.batch_cmd._follow", _interrupt)
    path = tmp_path / "b.jsonl"
    path.write_text('{"prompt": "a fox"}\n{"prompt": "a hen"}\n')
    done = nbq("batch", str(path), "--batch-id", "ci", "--wait")
    assert done.code == EXIT_INTERRUPTED
    assert "batch ci has 2 job(s) enqueued" in done.stderr and "ci-1\nci-2" in done.stderr
    assert "nbq jobs --batch ci" in done.stderr


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(dir=tmp_path, extra_args=["--appendonly", "no"])
    server.start()
    yield server
    server.stop()


def test_an_accepted_volatile_store_is_not_repeated_by_every_command(
    volatile_redis: RedisServer, capfd: pytest.CaptureFixture[str]
) -> None:
    env = {"NBQ_BROKER_URL": volatile_redis.url, "NBQ_ALLOW_VOLATILE_STORE": "true"}
    done = Nbq(env)("status", "nope")
    assert done.code == 1 and "nope" in done.stderr, done.stderr
    printed = done.stderr + "".join(capfd.readouterr())
    assert "store_volatile_allowed" not in printed and "appendonly" not in printed
    # Refused as before when not accepted
    refused = Nbq({"NBQ_BROKER_URL": volatile_redis.url})("status", "nope")
    assert refused.code == 2 and "NBQ_ALLOW_VOLATILE_STORE=true" in refused.stderr
