"""Keep one test's logging configuration from reaching the next.

``workers.logs.configure_logging`` installs a handler on the root logger (the stdlib
bridge) and sets levels; a test that configures logging in-process (or a command it runs
with CliRunner) would otherwise leave every later test's library records (Celery, kombu)
printed into that test's output. Each test ends with the root logger and the quieted
loggers as they were before it, and with structlog's configuration and the process's
"logging is configured" flag (``workers.startup.configure_process``, once per process) as
they were: structlog's ``capture_logs`` restores its processors but leaves structlog
*configured* with its defaults (printing to stdout); a ``Producer`` built after it took
that for a host's own logging and set the once-per-process flag, so a later in-process
``nbq --json`` printed a warning into its JSON output (seen when pytest-xdist's test
processes ran tests/workers/jobs/test_durability.py before tests/producers/cli).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from nanobanana_queue.workers import startup
from nanobanana_queue.workers.logs import PER_MESSAGE_LOGGERS, QUIET_LOGGERS

RECORD_SWITCHES = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in (*QUIET_LOGGERS, *PER_MESSAGE_LOGGERS)}
    # What a record looks up (workers.logs.skip_unrendered_record_fields turns it off).
    switches = {name: getattr(logging, name) for name in RECORD_SWITCHES}
    structlog_configured, structlog_config = structlog.is_configured(), structlog.get_config()
    process_configured = startup._configured
    yield
    if structlog_configured:
        structlog.configure(**structlog_config)
    else:
        structlog.reset_defaults()
    startup._configured = process_configured
    for name, value in switches.items():
        setattr(logging, name, value)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)
