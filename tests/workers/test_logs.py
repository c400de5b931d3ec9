"""workers.logs redaction: signed URL queries, bearer tokens and registered secrets vanish."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from nanobanana_queue.workers.logs import (
    MAX_LOG_VALUE_CHARS,
    cap_processor,
    configure_logging,
    get_logger,
    log_json_from_env,
    redact_processor,
    redact_text,
    register_secret,
    scrub_processor,
    visible_processor,
)

SECRET = "s3cr3t-value-for-logs-test"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_url_query_string_is_removed_but_the_url_kept() -> None:
    text = "fetched https://files.example.com/a/b.png?X-Amz-Signature=abc&X-Amz-Expires=60 ok"

    redacted = redact_text(text)

    assert redacted == "fetched https://files.example.com/a/b.png?<redacted> ok"


def test_several_urls_and_http_urls_are_all_stripped() -> None:
    text = "a http://h.example/x?sig=1 b https://k.example/y?token=2 c https://plain.example/z"

    redacted = redact_text(text)

    assert "sig=1" not in redacted
    assert "token=2" not in redacted
    assert "https://plain.example/z" in redacted


def test_url_inside_quotes_keeps_the_closing_quote() -> None:
    assert redact_text('url="https://h.example/p?q=1"') == 'url="https://h.example/p?<redacted>"'


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "BEARER  "])
def test_bearer_tokens_are_removed(prefix: str) -> None:
    redacted = redact_text(f"Authorization: {prefix}sk-abc.DEF_123-xyz")

    assert "sk-abc" not in redacted
    assert redacted.endswith("<redacted>")


def test_registered_secret_is_removed_wherever_it_appears() -> None:
    register_secret(SECRET)

    assert redact_text(f"key={SECRET}; again:{SECRET}!") == "key=<redacted>; again:<redacted>!"


def test_very_short_or_empty_secrets_are_not_registered() -> None:
    register_secret("ab")
    register_secret("")
    register_secret(None)

    assert redact_text("ab abc cab") == "ab abc cab"


def test_text_without_secrets_is_unchanged() -> None:
    text = "job 42 moved to generating (progress=10%)"

    assert redact_text(text) == text


def test_processor_redacts_nested_dicts_lists_and_tuples() -> None:
    register_secret(SECRET)
    event: dict[str, Any] = {
        "event": f"call with {SECRET}",
        "nested": {"url": "https://h.example/x?sig=1", "deeper": {"auth": "Bearer tok123"}},
        "items": ["https://h.example/y?sig=2", (SECRET, 3)],
        "count": 7,
        "none": None,
    }

    out = redact_processor(None, "info", event)

    assert out == {
        "event": "call with <redacted>",
        "nested": {
            "url": "https://h.example/x?<redacted>",
            "deeper": {"auth": "Bearer <redacted>"},
        },
        "items": ["https://h.example/y?<redacted>", ["<redacted>", 3]],
        "count": 7,
        "none": None,
    }


def test_processor_does_not_mutate_the_callers_values() -> None:
    nested = {"url": "https://h.example/x?sig=1"}

    redact_processor(None, "info", {"nested": nested})

    assert nested == {"url": "https://h.example/x?sig=1"}


def test_rendered_log_lines_are_redacted_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret(SECRET)
    configure_logging("INFO", json=True)

    get_logger("t").warning(
        "download_failed",
        url="https://files.example.com/r.png?X-Amz-Signature=deadbeef",
        headers={"Authorization": f"Bearer {SECRET}"},
        attempts=[SECRET],
    )

    line = json.loads(capsys.readouterr().err)
    assert line["url"] == "https://files.example.com/r.png?<redacted>"
    assert SECRET not in json.dumps(line)
    assert "deadbeef" not in json.dumps(line)
    assert line["level"] == "warning"


def test_exception_tracebacks_are_redacted_too(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret(SECRET)
    configure_logging("INFO", json=True)

    try:
        raise RuntimeError(f"boom with {SECRET} at https://h.example/p?sig=9")
    except RuntimeError:
        get_logger("t").exception("failed")

    output = capsys.readouterr().err
    assert "RuntimeError" in output
    assert SECRET not in output
    assert "sig=9" not in output


def test_level_filter_drops_lower_events(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING")

    get_logger("t").info("quiet")
    get_logger("t").warning("loud")

    output = capsys.readouterr().err
    assert "loud" in output
    assert "quiet" not in output


@pytest.mark.parametrize(
    ("value", "json_on"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True),
     ("false", False), ("0", False), ("", False), ("not-a-bool", False)],
)  # fmt: skip
def test_nbq_log_json_is_read_from_the_environment_as_the_settings_read_it(
    value: str, json_on: bool
) -> None:
    """What logs before (or without) the settings: the emulator, a configuration error."""
    assert log_json_from_env({"NBQ_LOG_JSON": value}) is json_on
    assert log_json_from_env({"nbq_log_json": value}) is json_on
    assert log_json_from_env({}) is False


_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(max_size=MAX_LOG_VALUE_CHARS + 20),
    st.sampled_from(
        [
            "see https://h.example/a.png?X-Amz-Signature=abc now",
            "Authorization: Bearer abc.def-ghi",
            f"key {SECRET} here",
            "job\x1b]0;PWNED\x07 \u202eabc",
            "line one\nline two\tend",
            "x" * (MAX_LOG_VALUE_CHARS + 1),
        ]
    ),
)
_SCALAR = st.one_of(_TEXT, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
_VALUE = st.recursive(
    st.one_of(_SCALAR, st.binary(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_TEXT, inner, max_size=4),
    ),
    max_leaves=12,
)
_KEY = st.one_of(st.sampled_from(["event", "exception", "stack", "job_id", "url"]), _TEXT)


@settings(max_examples=300, deadline=None)
@given(event=st.dictionaries(_KEY, _VALUE, max_size=6), quote=st.booleans())
def test_scrub_processor_is_redact_then_cap_then_visible_in_one_pass(
    event: dict[str, Any], quote: bool
) -> None:
    """The worker's chain runs the fused processor: every line must come out exactly as
    the three processors in a row would make it (redaction first, the cap, the escapes)."""
    register_secret(SECRET)
    three = visible_processor(quote=quote)(
        None, "info", cap_processor(None, "info", redact_processor(None, "info", dict(event)))
    )

    one = scrub_processor(quote=quote)(None, "info", dict(event))

    assert list(one) == list(three)
    assert {k: (type(v), repr(v)) for k, v in one.items()} == {
        k: (type(v), repr(v)) for k, v in three.items()
    }
