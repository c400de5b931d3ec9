"""Keep one test's logging configuration from reaching the next.

``workers.logs.configure_logging`` installs a handler on the root logger (the stdlib
bridge) and sets levels; a test that configures logging in-process (or a command it runs
with CliRunner) would otherwise leave every later test's library records (Celery, kombu)
printed into that test's output. Each test ends with the root logger and the quieted
loggers as they were before it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from nanobanana_queue.workers.logs import QUIET_LOGGERS

RECORD_SWITCHES = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    # What a record looks up (workers.logs.skip_unrendered_record_fields turns it off).
    switches = {name: getattr(logging, name) for name in RECORD_SWITCHES}
    yield
    for name, value in switches.items():
        setattr(logging, name, value)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)
