"""workers.logs's stdlib bridge: other libraries' records and Python warnings come out in
our format (JSON lines in production), redacted; a Producer's host keeps its logging."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator

import pytest
import structlog

from nanobanana_queue.workers.logs import HANDLER_NAME, configure_logging, register_secret

SECRET = "bridge-secret-value"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    # (the root logger itself is restored by tests/support/logging_guard.py)
    yield
    logging.captureWarnings(False)
    structlog.reset_defaults()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_celery_records_and_warnings_are_json_lines_redacted_like_ours(
    capsys: pytest.CaptureFixture[str],
) -> None:
    register_secret(SECRET)
    configure_logging("INFO", json=True)

    logging.getLogger("celery.worker.consumer").info("Connected to redis://:%s@h:6379/0", SECRET)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # not the suite's "error"
        warnings.warn("running as root", UserWarning, stacklevel=1)
    structlog.get_logger("t").info("ours", job_id="j1")

    events = json_lines(capsys.readouterr().err)
    assert events[0]["event"] == "Connected to redis://:<redacted>@h:6379/0"
    assert events[0]["logger"] == "celery.worker.consumer" and events[0]["level"] == "info"
    assert events[1]["logger"] == "py.warnings" and "running as root" in str(events[1]["event"])
    assert events[2] == {**events[2], "event": "ours", "job_id": "j1", "level": "info"}
    assert all("timestamp" in e for e in events)


def test_a_reconfiguration_replaces_the_handler_instead_of_adding_one() -> None:
    configure_logging("INFO")
    configure_logging("WARNING", json=True)

    ours = [h for h in logging.getLogger().handlers if h.get_name() == HANDLER_NAME]
    assert len(ours) == 1
    assert logging.getLogger().level == logging.WARNING


def test_without_the_bridge_the_hosts_logging_is_left_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A Producer built in a service that configured neither structlog nor logging for us
    before = list(logging.getLogger().handlers)
    configure_logging("INFO", json=True, stdlib=False)

    structlog.get_logger("t").info("ours")

    assert logging.getLogger().handlers == before
    assert json_lines(capsys.readouterr().err)[0]["event"] == "ours"


def test_a_worker_looks_up_nothing_for_a_record_that_no_line_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Caller, thread and process lookups cost every record (two per line through the
    bridge) and no format of ours renders them: the process that owns its logging turns
    them off; each line still has everything it shows."""
    configure_logging("INFO", json=True)

    logging.getLogger("celery.app.trace").info("Task %s succeeded in %ss", "nbq.poll", 0.01)
    structlog.get_logger("t").info("ours", job_id="j1")

    assert (logging._srcfile, logging.logThreads, logging.logProcesses) == (None, False, False)
    celery, ours = json_lines(capsys.readouterr().err)
    assert celery["event"] == "Task nbq.poll succeeded in 0.01s"
    assert celery["logger"] == "celery.app.trace" and "timestamp" in celery
    assert ours == {**ours, "event": "ours", "job_id": "j1", "level": "info"}


def test_a_producers_host_keeps_its_record_lookups() -> None:
    configure_logging("INFO", stdlib=False)

    assert logging._srcfile is not None and logging.logThreads


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_celerys_line_per_received_message_is_written_at_debug_only(
    capsys: pytest.CaptureFixture[str], level: str, shown: bool
) -> None:
    """The consumer loop's "received" line costs the thread that feeds the whole pool;
    Flower's task-received event and the run's "succeeded in" line say the same. Its
    warnings (a rejected ETA, say) still come out, as do the run's own lines."""
    configure_logging(level, json=True)
    strategy = logging.getLogger("celery.worker.strategy")

    strategy.info("Task %s[%s] received", "nbq.poll", "id-1")
    strategy.warning("odd message")
    logging.getLogger("celery.app.trace").info("Task %s succeeded in %ss", "nbq.poll", 0.01)

    events = [line["event"] for line in json_lines(capsys.readouterr().err)]
    assert ("Task nbq.poll[id-1] received" in events) is shown
    assert "odd message" in events and "Task nbq.poll succeeded in 0.01s" in events
