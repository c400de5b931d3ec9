"""One rule for terminals and logs (issue 25): no character a sender controls can act on
the terminal that shows it — control characters, C1, DEL and bidi marks come out as
visible escapes, ordinary text is unchanged, and both log renderers apply the rule."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from nanobanana_queue.workers.logs import configure_logging, get_logger
from nanobanana_queue.workers.visible import is_visible, visible

#: A character that a terminal acts on, or that reorders or splits a line.
RAW_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)

ATTACKS = [
    "\x1b]0;PWNED\x07",  # OSC: set the window title
    "\x1b[2J\x1b[H",  # clear the screen, cursor home
    "\x1b[32mnbq: 0 dead letters, all clear\x1b[0m",  # a fake green line
    "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",  # OSC-8 hyperlink
    "\x9b2J",  # the same as C1 (8-bit CSI)
    "\x9d0;PWNED\x9c",  # 8-bit OSC
    "ok\nFAKE LOG LINE level=info",
    "abc\u202eevil\u202c",  # right-to-left override
    "\x7f\x00\x08\r",
]
#: Text that may carry anything: controls, C1, bidi marks, markup, surrogates.
hostile_text = st.text(
    alphabet=st.one_of(
        st.characters(codec=None),
        st.sampled_from(["\x1b", "\x9b", "\x9d", "\x07", "\u202e", "\u2066", "[", "]", "/"]),
    ),
    max_size=60,
) | st.sampled_from(ATTACKS)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_known_attack_comes_out_as_visible_escapes(attack: str) -> None:
    shown = visible(attack)

    assert RAW_CONTROL.search(shown) is None
    assert "\\x" in shown or "\\u" in shown


def test_ordinary_text_is_left_alone() -> None:
    for text in ("a cat on a mat", "Ünïcödé 猫 🍌", "[bold]not markup here[/bold]", ""):
        assert visible(text) == text and is_visible(text)


def test_escapes_name_the_character() -> None:
    assert visible("a\x1bb\x9bc\u202ed\x7f") == "a\\x1bb\\x9bc\\u202ed\\x7f"
    assert visible("line1\nline2\t", keep_lines=True) == "line1\nline2\t"
    assert visible("line1\nline2") == "line1\\x0aline2"


@settings(max_examples=200, deadline=None)
@given(hostile_text)
def test_no_generated_text_keeps_a_raw_control_character(text: str) -> None:
    shown = visible(text)

    assert RAW_CONTROL.search(shown) is None
    shown.encode("utf-8")  # lone surrogates are escaped too: the line can be written


@pytest.mark.parametrize("as_json", [False, True], ids=["console", "json"])
@settings(max_examples=60, deadline=None)
@given(value=hostile_text, key=hostile_text)
def test_both_log_renderers_escape_every_value_and_key(as_json: bool, value: str, key: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        configure_logging("INFO", json=as_json)
        get_logger("t").warning(
            "callback_rejected", job_id=value, nested={"queue": [value]}, **{f"k{key}": 1}
        )

    output = err.getvalue()
    assert output.endswith("\n") and output.count("\n") == 1  # one event, one line
    assert RAW_CONTROL.search(output[:-1]) is None


def test_the_console_renderer_quotes_a_value_it_had_to_escape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")

    get_logger("t").warning("callback_rejected", job_id="x\x1b]0;PWNED\x07\x1b[2J")

    assert "job_id='x\\x1b]0;PWNED\\x07\\x1b[2J'" in capsys.readouterr().err


def test_the_json_renderer_keeps_the_escape_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)

    get_logger("t").warning("guard_refused", queue="q\x1b[2J")

    assert json.loads(capsys.readouterr().err)["queue"] == "q\\x1b[2J"


def test_a_traceback_keeps_its_lines_but_not_its_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json=True)
    try:
        raise ValueError("bad id \x1b[2J")
    except ValueError:
        get_logger("t").exception("failed")

    exception = json.loads(capsys.readouterr().err)["exception"]
    assert "\n" in exception and "\x1b" not in exception and "\\x1b[2J" in exception


@pytest.mark.parametrize("form", ["tuple", "mapping"])
def test_stdlib_records_of_celery_and_uvicorn_get_the_same_rule(form: str) -> None:
    # Given logging configured as every nbq process does, and a stdlib handler
    configure_logging("INFO")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("celery.worker.strategy.t")
    logger.addHandler(handler)
    try:
        # When Celery logs a received task whose id is made of escapes
        if form == "tuple":
            logger.warning("Task %s[%s] received", "nbq.poll", "\x1b]0;PWNED\x07")
        else:
            logger.warning("Task %(name)s[%(id)s] received", {"name": "n", "id": "\x9b2J"})
    finally:
        logger.removeHandler(handler)
    # Then the line shows them as text
    line = stream.getvalue()
    assert "received" in line and RAW_CONTROL.search(line.rstrip("\n")) is None


def test_no_character_visible_escapes_is_printable() -> None:
    """``visible`` returns a printable text unchanged without searching it: that shortcut
    holds only while no character of either pattern is one ``str.isprintable`` accepts."""
    from nanobanana_queue.workers.visible import _UNSAFE, _UNSAFE_KEEP_LINES

    for pattern in (_UNSAFE, _UNSAFE_KEEP_LINES):
        escaped = [c for c in map(chr, range(0x110000)) if pattern.match(c)]
        assert escaped and not [c for c in escaped if c.isprintable()]
