"""``nbq batch``: a batch has an id, its jobs are BATCH-LINE, and re-running the file
enqueues (and pays for) nothing twice."""

from __future__ import annotations

import json
from pathlib import Path

from tests.producers.cli.conftest import Nbq
from tests.support.redis_server import RedisServer


def _file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _line(prompt: str) -> str:
    return json.dumps({"prompt": prompt, "quality": "1K"})


def test_a_file_gets_a_batch_id_from_its_content_and_job_ids_batch_line(
    nbq: Nbq, tmp_path: Path
) -> None:
    path = _file(tmp_path, _line("a fox"), "", _line("a hen"))
    first = nbq("batch", str(path))
    assert first.code == 0, first.stderr
    batch = first.stdout.split()[1].rstrip(":")
    assert batch.startswith("b-") and len(batch) == 18
    assert f"{batch}-1" in first.stdout and f"{batch}-3" in first.stdout
    assert "2 new" in first.stdout
    # Then `nbq jobs --batch` finds them
    listed = nbq("jobs", "--batch", batch, "--json").json()
    assert sorted(j["job_id"] for j in listed) == [f"{batch}-1", f"{batch}-3"]
    assert {j["batch_id"] for j in listed} == {batch}


def test_running_the_same_file_twice_enqueues_nothing_twice(
    nbq: Nbq, tmp_path: Path, session_redis: RedisServer
) -> None:
    path = _file(tmp_path, _line("a fox"), _line("a hen"))
    assert nbq("batch", str(path)).code == 0
    messages = session_redis.client().llen("submit")  # no worker here: they stay queued
    again = nbq("batch", str(path), "--json")
    assert again.code == 0, again.stderr
    assert "0 new, 2 already enqueued" in again.stderr
    records = [json.loads(line) for line in again.stdout.splitlines()]
    assert [r["state"] for r in records] == ["queued", "queued"]
    # No message was sent again, and only two jobs exist
    assert session_redis.client().llen("submit") == messages
    listed = nbq("jobs", "--json", "--limit", "100").json()
    assert len(listed) == 2


def test_fixing_a_bad_line_and_rerunning_with_the_batch_id_sends_only_that_line(
    nbq: Nbq, tmp_path: Path
) -> None:
    path = _file(tmp_path, _line("a fox"), '{"prompt": ""}', _line("a hen"))
    first = nbq("batch", str(path), "--batch-id", "shoot-7")
    # A skipped line is not success: exit 1, and the count and the way out are said
    assert first.code == 1
    assert "1 line(s) skipped" in first.stderr and "--batch-id shoot-7" in first.stderr
    assert "line 2: prompt" in first.stderr
    path.write_text(_line("a fox") + "\n" + _line("an owl") + "\n" + _line("a hen") + "\n")
    second = nbq("batch", str(path), "--batch-id", "shoot-7")
    assert second.code == 0, second.stderr
    assert "1 new, 2 already enqueued" in second.stdout
    listed = nbq("jobs", "--batch", "shoot-7", "--json").json()
    assert sorted(j["job_id"] for j in listed) == ["shoot-7-1", "shoot-7-2", "shoot-7-3"]


def test_a_line_that_changed_under_the_same_batch_id_is_refused_not_mapped(
    nbq: Nbq, tmp_path: Path
) -> None:
    path = _file(tmp_path, _line("a fox"))
    assert nbq("batch", str(path), "--batch-id", "s1").code == 0
    path.write_text(_line("a wolf") + "\n")
    moved = nbq("batch", str(path), "--batch-id", "s1")
    assert moved.code == 1
    assert "already exists with a different request" in moved.stderr


def test_a_bad_batch_id_is_refused_before_anything_is_enqueued(nbq: Nbq, tmp_path: Path) -> None:
    path = _file(tmp_path, _line("a fox"))
    done = nbq("batch", str(path), "--batch-id", "../x", "--json")
    assert done.code == 2 and done.json()["error"]["code"] == "invalid_request"
    assert nbq("jobs", "--json").json() == []


def test_a_batch_from_stdin_gets_an_id_too(nbq: Nbq) -> None:
    done = nbq("batch", "-", "--producer", "alice", input=_line("a fox") + "\n")
    assert done.code == 0, done.stderr
    batch = done.stdout.split()[1].rstrip(":")
    assert batch.startswith("alice~b-")
    listed = nbq("jobs", "--batch", batch, "--json").json()
    assert [j["job_id"] for j in listed] == [f"{batch}-1"]


def test_the_rerun_hint_of_a_producers_batch_names_an_id_the_option_accepts(
    nbq: Nbq, tmp_path: Path
) -> None:
    path = _file(tmp_path, _line("a fox"), "not json")
    first = nbq("batch", str(path), "--producer", "alice", "--batch-id", "p1")
    assert first.code == 1 and "--batch-id p1 " in first.stderr
    path.write_text(_line("a fox") + "\n" + _line("a hen") + "\n")
    second = nbq("batch", str(path), "--producer", "alice", "--batch-id", "p1")
    assert second.code == 0 and "1 new, 1 already enqueued" in second.stdout
    listed = nbq("jobs", "--batch", "alice~p1", "--json").json()
    assert sorted(j["job_id"] for j in listed) == ["alice~p1-1", "alice~p1-2"]
