"""Every caller-controlled value in a log line is capped (issue 13): a 1 MB job id is not a
1 MB log line, and a secret is redacted before the cut can split it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from nanobanana_queue.workers.jobs.ids import InvalidJobIdError, validate_job_id
from nanobanana_queue.workers.logs import (
    MAX_LOG_VALUE_CHARS,
    cap_text,
    configure_logging,
    get_logger,
    register_secret,
)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_a_megabyte_job_id_is_logged_as_200_characters_and_its_length(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json=True)
    huge = "j" * 1_000_000
    get_logger("t").warning("intake_refused", job_id=huge, nested={"ids": [huge] * 3})
    line = json.loads(capsys.readouterr().err)
    assert line["job_id"] == "j" * MAX_LOG_VALUE_CHARS + "…(1000000 chars)"
    assert line["nested"]["ids"][0] == line["job_id"]
    assert line["event"] == "intake_refused"


def test_a_secret_straddling_the_cap_is_redacted_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "straddling-secret-value-42"
    register_secret(secret)
    configure_logging("INFO", json=True)
    get_logger("t").warning("e", detail="x" * 190 + secret + "y" * 100)
    output = capsys.readouterr().err
    assert secret[:8] not in output and "<redacted>" in output


def test_short_values_are_unchanged() -> None:
    assert cap_text("order-1") == "order-1"
    assert cap_text("a" * 201) == "a" * 200 + "…(201 chars)"


def test_the_error_for_a_megabyte_job_id_names_only_its_first_characters() -> None:
    with pytest.raises(InvalidJobIdError) as refused:
        validate_job_id("j" * 1_000_000)
    assert len(str(refused.value)) < 400
