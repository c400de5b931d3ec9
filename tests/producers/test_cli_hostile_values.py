"""No value a sender or producer controls can act on the terminal of the operator running
``nbq`` (issue 25): every command that prints job ids, prompts, producer and batch names,
error messages, breaker messages or dead-letter fields is fed a hostile value — terminal
escapes, C1 controls, a bidi override and rich markup — and prints it as visible text.

In-process (typer's runner) with fakes behind each command's one seam, so the whole
enumeration costs well under a second.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.color import ColorSystem
from rich.console import Console
from typer.testing import CliRunner

from nanobanana_queue.producers.cli import dead_cmd, jobs_cmd, recover_cmd
from nanobanana_queue.producers.cli.live import status_line
from nanobanana_queue.producers.cli.main import app
from nanobanana_queue.producers.errors import ProducerError
from nanobanana_queue.workers.cli import common
from nanobanana_queue.workers.deadletters import DeadLetter, DeadLetterStats
from nanobanana_queue.workers.evolink.models import Task
from nanobanana_queue.workers.jobs.record import JobError, JobRecord, StoredObject
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.resilience.breaker import BreakerStatus
from nanobanana_queue.workers.resilience.fairshare import ProducerShare

#: Escapes (OSC title, clear screen, 8-bit CSI), markup (an OSC-8 link), a bidi override.
HOSTILE = "j\x1b]0;PWNED\x07\x1b[2J\x9b31m[link=https://evil.example/]x[/link]\u202eok"
#: What must reach the output literally: the markup as text, not as a link.
MARKUP = "[link=https://evil.example/]x[/link]"
RAW_CONTROL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def hostile_record(value: str, state: JobState = JobState.FAILED) -> JobRecord:
    return JobRecord(
        job_id=value,
        state=state,
        request={"prompt": value},
        producer=value,
        batch_id=value,
        evolink_task_id=value,
        waiting_reason=value,
        callback_task_id=value,
        error=JobError(code=value, message=value),
        objects=[StoredObject(key=value, sha256="ab" * 32, size=1, content_type=value)],
        updated_at=time.time(),
    )


class FakeRedis:
    """Enough Redis for the CLI's own calls: a submit's PING, a batch's membership set."""

    def ping(self) -> bool:
        return True

    def pipeline(self, *_: Any, **__: Any) -> FakeRedis:
        return self

    def sadd(self, *_: Any) -> FakeRedis:
        return self

    def expire(self, *_: Any) -> FakeRedis:
        return self

    def execute(self) -> list[Any]:
        return []


class FakeStore:
    prefix = "nbq"
    redis = FakeRedis()

    def get(self, _job_id: str) -> None:
        return None  # every batch line is new


@dataclass
class FakeProducer:
    """Answers every call with hostile data, or raises a hostile ProducerError."""

    value: str
    fail: bool = False
    settings: Any = field(default_factory=lambda: SimpleNamespace(job_retention_s=60))
    runtime: Any = field(default_factory=lambda: SimpleNamespace(redis=FakeRedis(),
                                                                 store=FakeStore()))  # fmt: skip

    def _answer(self, state: JobState = JobState.FAILED) -> JobRecord:
        if self.fail:
            raise ProducerError(self.value)
        return hostile_record(self.value, state)

    def enqueue(self, *_: Any, **__: Any) -> Any:
        if self.fail:
            raise ProducerError(self.value)
        record = self._answer()
        return type("Handle", (), {"job_id": record.job_id, "status": lambda _s: record})()

    def status(self, *_: Any, **__: Any) -> JobRecord:
        return self._answer()

    def wait(self, *_: Any, **__: Any) -> JobRecord:
        return self._answer()

    def cancel(self, *_: Any, **__: Any) -> JobRecord:
        return self._answer(JobState.CANCELLED)

    def retry(self, *_: Any, **__: Any) -> JobRecord:
        return self._answer(JobState.QUEUED)

    def adopt(self, *_: Any, **__: Any) -> JobRecord:
        return self._answer(JobState.QUEUED)  # then FAILED: `nbq adopt` stops waiting

    def task_facts(self, *_: Any, **__: Any) -> Task:
        return Task(id=self.value)  # no created time: `nbq adopt` shows it and goes on


class FakeDeadStore:
    def __init__(self, value: str, *, found: bool = True) -> None:
        self.value, self.found = value, found

    def letter(self) -> DeadLetter:
        v = self.value
        return DeadLetter(
            id=v, at=time.time(), queue=v, reason=v, detail=v, hostname=v, task=v,
            message_id=v, headers=v, body=v, body_bytes=1,
        )  # fmt: skip

    def list(self, **_: Any) -> list[DeadLetter]:
        return [self.letter()]

    def get(self, _id: str) -> DeadLetter | None:
        return self.letter() if self.found else None

    def stats(self) -> DeadLetterStats:
        return DeadLetterStats(count=1, bytes=1, dropped=7, pinned=1, max_entries=5, max_bytes=9)

    def remove(self, _id: str) -> bool:
        return True


@dataclass
class Case:
    """One command line and the seams it reads hostile data from."""

    args: list[str]  # "{v}": the hostile value itself, as typed (pasted) by the operator
    seams: Callable[[pytest.MonkeyPatch, str], None]
    stdin: str | None = None


def producer_seam(*, fail: bool = False) -> Callable[[pytest.MonkeyPatch, str], None]:
    def install(mp: pytest.MonkeyPatch, value: str) -> None:
        fake = FakeProducer(value, fail=fail)
        mp.setattr(jobs_cmd, "_producer", lambda: fake)
        mp.setattr(recover_cmd, "_producer", lambda: fake)
        mp.setattr("nanobanana_queue.producers.api.Producer", lambda *a, **k: fake)
        mp.setattr("nanobanana_queue.producers.cli.consumers.warn_if_unconsumed", lambda _p: False)

    return install


def listing_seam(mp: pytest.MonkeyPatch, value: str) -> None:
    fake_runtime = type("R", (), {"store": None})()
    mp.setattr(
        "nanobanana_queue.workers.runtime.Runtime.from_settings", lambda *_a, **_k: fake_runtime
    )
    mp.setattr(
        "nanobanana_queue.producers.listing.list_jobs", lambda *_a, **_k: [hostile_record(value)]
    )


def quota_seam(mp: pytest.MonkeyPatch, value: str) -> None:
    status = BreakerStatus(state="open", kind=value, since=1.0, code=value, message=value)
    breaker = type("B", (), {"status": lambda _s: status, "close": lambda _s: True})()
    store = type("S", (), {"count_in_state": lambda _s, _st: 3})()
    share = ProducerShare(value, {"high": 1}, 1.0, 1.0, 0)
    fair = type("F", (), {"snapshot": lambda _s: [share], "max_in_flight": 2})()
    runtime = type("RT", (), {"breaker": breaker, "store": store, "fair": lambda _s: fair})()
    mp.setattr("nanobanana_queue.workers.runtime.get_runtime", lambda: runtime)


def dead_seam(*, found: bool = True) -> Callable[[pytest.MonkeyPatch, str], None]:
    def install(mp: pytest.MonkeyPatch, value: str) -> None:
        mp.setattr(dead_cmd, "_store", lambda: FakeDeadStore(value, found=found))
        refusal = type("Refusal", (), {"reason": value, "detail": value})()
        outcome = type("Outcome", (), {"refusal": refusal})()
        mp.setattr("nanobanana_queue.workers.deadletters.replay_letter", lambda *_a: outcome)

    return install


def config_error_seam(mp: pytest.MonkeyPatch, value: str) -> None:
    from nanobanana_queue.workers.settings import ConfigError

    def broken() -> Any:
        raise ConfigError(value)

    mp.setattr(dead_cmd, "_store", broken)


#: Every command that prints data it did not write itself.
CASES = {
    "submit": Case(["submit", "a cat"], producer_seam()),
    "submit --wait": Case(["submit", "a cat", "--wait"], producer_seam()),
    "submit refused": Case(["submit", "a cat"], producer_seam(fail=True)),
    "status": Case(["status", "J"], producer_seam()),
    "status refused": Case(["status", "J"], producer_seam(fail=True)),
    "wait": Case(["wait", "J"], producer_seam()),
    "cancel": Case(["cancel", "J"], producer_seam()),
    "cancel refused": Case(["cancel", "J"], producer_seam(fail=True)),
    "get refused": Case(["get", "J"], producer_seam(fail=True)),
    "get not stored": Case(["get", "{v}"], producer_seam()),
    "retry": Case(["retry", "J"], producer_seam()),
    "retry refused": Case(["retry", "J"], producer_seam(fail=True)),
    "adopt": Case(["adopt", "J", "{v}", "--wait", "0"], producer_seam()),
    "adopt waiting": Case(["adopt", "{v}", "T", "--wait", "0.01"], producer_seam()),
    "adopt refused": Case(["adopt", "J", "T"], producer_seam(fail=True)),
    "jobs": Case(["jobs"], listing_seam),
    "batch": Case(["batch", "-"], producer_seam(), stdin='{"prompt": "a"}\nnot json\n'),
    "batch refused": Case(["batch", "-"], producer_seam(fail=True), stdin='{"prompt": "a"}\n'),
    "quota": Case(["quota"], quota_seam),
    "dead list": Case(["dead", "list"], dead_seam()),
    "dead show missing": Case(["dead", "show", "{v}"], dead_seam(found=False)),
    "dead replay refused": Case(["dead", "replay", "X"], dead_seam()),
    "configuration error": Case(["dead", "list"], config_error_seam),
}


@pytest.fixture(autouse=True)
def _wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide enough that no cell is folded: the markup must be findable whole."""
    for console in (common.console, common.err_console):
        monkeypatch.setattr(console, "_width", 2000)


def run(case: Case, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    case.seams(monkeypatch, value)
    with monkeypatch.context() as mp:
        mp.chdir(tmp_path)
        args = [arg.replace("{v}", value) for arg in case.args]
        result = CliRunner().invoke(app, args, input=case.stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.output


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_value_is_printed_as_visible_text(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    output = run(CASES[name], HOSTILE, monkeypatch, tmp_path)

    assert RAW_CONTROL.search(output) is None, output
    assert "\\x1b]0;PWNED" in output  # shown, escaped
    if name not in ("submit", "cancel", "adopt"):  # a plain echo of an id: no markup involved
        assert MARKUP in output  # printed as text, never interpreted as a link


#: rich's own sequences on a terminal: colours (SGR) and hiding the cursor while a live
#: display runs; nothing else (no OSC title or link, no clear-screen, no 8-bit controls).
OUR_STYLES = re.compile(r"\x1b\[[0-9;]*m|\x1b\[\?25[lh]")


@pytest.mark.parametrize("name", list(CASES))
def test_on_a_colour_terminal_only_our_own_styles_are_escape_sequences(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given consoles that believe they draw on a colour terminal (links enabled)
    for console in (common.console, common.err_console):
        monkeypatch.setattr(console, "_force_terminal", True)
        monkeypatch.setattr(console, "_color_system", ColorSystem.TRUECOLOR)
    # When a command prints the hostile value
    output = run(CASES[name], HOSTILE, monkeypatch, tmp_path)
    # Then no OSC (title, hyperlink), no clear-screen, no 8-bit control: only colours
    assert RAW_CONTROL.search(OUR_STYLES.sub("", output)) is None, output


def test_the_live_status_line_escapes_the_job_id_and_waiting_reason() -> None:
    record = hostile_record(HOSTILE, JobState.QUEUED)
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=500)
    console.print(status_line(record, 1.0))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert RAW_CONTROL.search(OUR_STYLES.sub("", output)) is None and MARKUP in output


@pytest.mark.parametrize("name", list(CASES))
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.text(
        alphabet=st.one_of(
            st.characters(codec="utf-8"), st.sampled_from(["\x1b", "\x9b", "[", "]", "/"])
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_no_generated_value_reaches_the_output_raw(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with monkeypatch.context() as mp:
        output = run(CASES[name], value, mp, tmp_path)

    assert RAW_CONTROL.search(output) is None, output
