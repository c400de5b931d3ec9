"""Every error a person can cause at the terminal is one line on stderr (JSON on stdout
with ``--json``) and a documented exit status (README, "Exit statuses"), never a traceback:
missing file, a directory, an unwritable output, a server that is not Redis, a refused
connection, bad options, bad configuration."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanobanana_queue.workers.cli.common import EXIT_UNREACHABLE, EXIT_USAGE
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from tests.producers.cli.conftest import Nbq, Result, settings_for
from tests.support.procs import free_port
from tests.support.records import seed


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """A port that answers like an HTTP server: something that is not Redis."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    server.close()


def _one_line(done: Result, code: int, *words: str) -> None:
    assert done.traceback_free, done.stderr
    assert done.code == code, (done.code, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def _json_error(done: Result, code: int, error_code: str) -> None:
    assert done.traceback_free, done.stderr
    assert done.code == code, (done.code, done.stdout, done.stderr)
    assert done.json()["error"]["code"] == error_code


def test_a_missing_batch_file(nbq: Nbq) -> None:
    _one_line(nbq("batch", "/nonexistent.jsonl"), EXIT_USAGE, "/nonexistent.jsonl", "No such")
    _json_error(nbq("batch", "/nonexistent.jsonl", "--json"), EXIT_USAGE, "file_error")


def test_a_directory_as_the_batch_file(nbq: Nbq, tmp_path: Path) -> None:
    _one_line(nbq("batch", str(tmp_path)), EXIT_USAGE, "Is a directory")
    _json_error(nbq("batch", str(tmp_path), "--json"), EXIT_USAGE, "file_error")


def test_a_batch_file_that_is_not_utf8(nbq: Nbq, tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    _one_line(nbq("batch", str(path)), EXIT_USAGE, "not UTF-8")


def test_an_unwritable_output_directory(nbq: Nbq, tmp_path: Path) -> None:
    seed(
        Runtime.from_settings(settings_for(nbq.env)).store,
        JobRecord(job_id="done1", state=JobState.STORED),
    )
    _one_line(nbq("get", "done1", "-o", "/proc/nope"), EXIT_USAGE, "/proc/nope")
    _json_error(nbq("get", "done1", "-o", "/proc/nope", "--json"), EXIT_USAGE, "file_error")


@pytest.mark.parametrize("command", [("status", "x"), ("jobs",), ("submit", "a fox"),
                                     ("cancel", "x"), ("dead", "list"), ("quota",)])  # fmt: skip
def test_a_server_that_is_not_redis(http_port: int, command: tuple[str, ...]) -> None:
    env = {"NBQ_BROKER_URL": f"redis://127.0.0.1:{http_port}/0"}
    done = Nbq(env)(*command)
    _one_line(done, EXIT_UNREACHABLE, f"127.0.0.1:{http_port}", "does not speak the Redis")
    _json_error(Nbq(env)(*command, "--json"), EXIT_UNREACHABLE, "connection_error")


@pytest.mark.parametrize("command", [("status", "x"), ("jobs",), ("batch", "-"),
                                     ("get", "x"), ("wait", "x")])  # fmt: skip
def test_a_refused_connection(command: tuple[str, ...]) -> None:
    env = {"NBQ_BROKER_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0"}
    done = Nbq(env)(*command, input='{"prompt": "a fox"}\n')
    _one_line(done, EXIT_UNREACHABLE, "connection refused", "***")
    assert "hunter2" not in done.stdout + done.stderr


def test_a_refused_connection_on_submit_says_nothing_was_enqueued() -> None:
    env = {"NBQ_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = Nbq(env)("submit", "a fox")
    _one_line(done, EXIT_UNREACHABLE, "connection refused", "nothing was enqueued")
    assert "may or may not" not in done.stderr


def test_a_malformed_flower_login_is_a_configuration_error_naming_the_variable(
    nbq: Nbq,
) -> None:
    done = nbq("flower", NBQ_FLOWER_BASIC_AUTH="admin")
    _one_line(done, EXIT_USAGE, "NBQ_FLOWER_BASIC_AUTH", "user:password")
    assert "admin" not in done.stderr.replace("NBQ_", "")  # the secret is not echoed
    _json_error(nbq("status", "x", "--json", NBQ_FLOWER_BASIC_AUTH="a:b,bob"), EXIT_USAGE,
                "configuration_error")  # fmt: skip


def test_a_wait_timeout_of_zero_or_less_is_refused_before_anything_is_enqueued(
    nbq: Nbq,
) -> None:
    for command in (("submit", "a fox", "--wait"), ("wait", "x"), ("batch", "-", "--wait")):
        done = nbq(*command, "--timeout", "-5", input="")
        assert done.code == EXIT_USAGE and "more than 0 seconds" in done.stderr, done.stderr
    assert nbq("jobs", "--json").json() == []


def test_the_exit_statuses_are_the_ones_the_readme_documents() -> None:
    from nanobanana_queue.workers.cli import common

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("#### Exit statuses", 1)[1].split("\n## ", 1)[0]
    documented = {int(n) for n in re.findall(r"^\| `(\d+)` \|", section, re.M)}
    from nanobanana_queue.producers.cli.jobs_cmd import JOB_ID_CONFLICT_EXIT
    from nanobanana_queue.workers.store_guard import EXIT_CONFIG

    used = {common.EXIT_FAILED, common.EXIT_USAGE, common.EXIT_UNREACHABLE,
            common.EXIT_INTERRUPTED, JOB_ID_CONFLICT_EXIT, EXIT_CONFIG}  # fmt: skip
    assert used | {0} == documented


def test_a_bad_emulator_option_is_one_line_naming_the_option(nbq: Nbq) -> None:
    done = nbq("emulator", "--image-format", "gif")
    _one_line(done, EXIT_USAGE, "--image-format", "'png', 'jpeg' or 'webp'")


def test_an_unwritable_results_file_is_refused_before_anything_is_enqueued(
    nbq: Nbq, tmp_path: Path
) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text('{"prompt": "a fox"}\n')
    done = nbq("batch", str(path), "--results", "/proc/nope/out.jsonl")
    _one_line(done, EXIT_USAGE, "/proc/nope/out.jsonl")
    assert nbq("jobs", "--json").json() == []
