"""Importing the producer API (or the Celery app module) changes nothing in the process.

A service that embeds ``Producer`` keeps its own logging, signal handlers and libraries:
configuration happens when a worker starts or a Producer is built, never at import,
and a Producer leaves a structlog configuration its host made alone.
Each check runs in a fresh interpreter, since this test process imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support.procs import ROOT
from tests.support.redis_server import RedisServer

#: Each test imports the package in a fresh Python process.
pytestmark = [pytest.mark.integration]

#: Prints what an import could have changed, as JSON, after running ``IMPORT``.
PROBE = """
import json, logging, signal, sys
before = {
    "root_handlers": [repr(h) for h in logging.getLogger().handlers],
    "root_level": logging.getLogger().level,
    "signals": [repr(signal.getsignal(s)) for s in (signal.SIGTERM, signal.SIGINT)],
}
IMPORT
import celery.signals, kombu.transport.redis, structlog
import nanobanana_queue.workers.app
import nanobanana_queue.workers.settings
after = {
    "root_handlers": [repr(h) for h in logging.getLogger().handlers],
    "root_level": logging.getLogger().level,
    "signals": [repr(signal.getsignal(s)) for s in (signal.SIGTERM, signal.SIGINT)],
}
print(json.dumps({
    "unchanged": before == after,
    "kombu_patched": getattr(kombu.transport.redis.Channel._connparams, "nbq_patched", False),
    "structlog_configured": structlog.is_configured(),
    "worker_init_receivers": len(celery.signals.worker_init.receivers),
    "shutting_down_receivers": len(celery.signals.worker_shutting_down.receivers),
    "app_configured": nanobanana_queue.workers.app.app.configured,
    "settings_read": nanobanana_queue.workers.settings.get_settings.cache_info().currsize,
}))
"""


def _run_fresh(code: str, env: dict[str, str]) -> Any:
    """What ``code`` prints as JSON, run in a fresh interpreter with only ``env``."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize(
    "statement",
    [
        "from producers import Producer",
        "import nanobanana_queue.workers.app",
        "import nanobanana_queue.workers.tasks",
    ],
)
def test_importing_configures_nothing(statement: str) -> None:
    # A broker nobody listens on: a connection attempted at import would hang or fail.
    env = {"PATH": "/usr/bin:/bin", "NBQ_BROKER_URL": "redis://127.0.0.1:1/0"}
    assert _run_fresh(PROBE.replace("IMPORT", statement), env) == {
        "unchanged": True,
        "kombu_patched": False,
        "structlog_configured": False,
        "worker_init_receivers": 0,
        "shutting_down_receivers": 0,
        "app_configured": False,
        "settings_read": 0,
    }


def test_the_app_reads_its_settings_when_first_used() -> None:
    """The lazily configured app still is the project's app once Celery asks."""
    from nanobanana_queue.workers.app import create_app
    from nanobanana_queue.workers.settings import load_settings

    app = create_app(load_settings(broker_url="redis://127.0.0.1:1/0"))
    assert not app.configured
    assert app.conf.task_default_queue == "submit"
    assert app.conf.imports == ("nanobanana_queue.workers.tasks",)
    assert app.conf.broker_url == "redis://127.0.0.1:1/0"


#: Builds a Producer in a process whose structlog is configured, or not, by its host.
HOST = """
import json, structlog
from nanobanana_queue.producers import Producer
from nanobanana_queue.workers import logs
HOST_CONFIG
processors_before = [repr(p) for p in structlog.get_config()["processors"]]
Producer()
print(json.dumps({
    "configured": structlog.is_configured(),
    "host_processors_kept": [repr(p) for p in structlog.get_config()["processors"]]
    == processors_before,
    "secret_known": "sk-host-test-key" in logs._SECRETS,
}))
"""


@pytest.mark.parametrize("host_configures_structlog", [True, False], ids=["host", "no-host"])
def test_a_producer_keeps_the_logging_its_host_service_configured(
    session_redis: RedisServer, host_configures_structlog: bool
) -> None:
    """An embedding service's structlog chain stays its own; the secrets are registered
    either way, for ``workers.logs.redact_processor`` in whichever chain runs."""
    host = "structlog.configure(processors=[structlog.processors.JSONRenderer()])"
    code = HOST.replace("HOST_CONFIG", host if host_configures_structlog else "")
    env = {
        "PATH": "/usr/bin:/bin",
        "NBQ_BROKER_URL": session_redis.url,
        "NBQ_EVOLINK_API_KEY": "sk-host-test-key",
    }
    assert _run_fresh(code, env) == {
        "configured": True,
        "host_processors_kept": host_configures_structlog,
        "secret_known": True,
    }
