"""Tracing is off unless the standard OTEL_* variables ask for it, and costs nothing then."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from nanobanana_queue.workers import tracing
from nanobanana_queue.workers.settings import Settings
from tests.support.procs import ROOT

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_the_standard_otel_variables_switch_tracing_on(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], exporters: list[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing.exporter_names(Settings()) == exporters


#: A worker's and a producer's start, with tracing off.
START = (
    "import sys\n"
    "import nanobanana_queue.producers\n"
    "import nanobanana_queue.workers.tasks.pipeline\n"
    "import nanobanana_queue.workers.tasks.reconcile\n"
    "from nanobanana_queue.workers.startup import configure_process\n"
    "configure_process()\n"
)


def _run(script: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


@pytest.mark.integration  # a fresh Python
def test_off_no_tracer_provider_and_no_instrumentation_is_loaded() -> None:
    # (redis-py >= 7 imports the OpenTelemetry metrics SDK for its own, unconfigured,
    # observability whenever the package is installed: that import is not ours.)
    _run(
        START
        + "ours = ('opentelemetry.instrumentation', 'opentelemetry.sdk.trace',\n"
        + "        'opentelemetry.exporter')\n"
        + "loaded = sorted(m for m in sys.modules if m.startswith(ours))\n"
        + "assert not loaded, loaded\n"
    )


@pytest.mark.integration  # a fresh Python
def test_without_the_otel_extra_everything_starts() -> None:
    blocker = (
        "import importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'opentelemetry':\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    _run("import sys\n" + blocker + START)


def test_off_the_helpers_do_nothing() -> None:
    assert not tracing.enabled()
    assert tracing.current_traceparent() is None
    with tracing.enqueue_span("alice") as span, tracing.resumed(TRACEPARENT):
        assert span is None
        assert tracing.current_traceparent() is None
    assert tracing.add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}


def test_a_stored_trace_context_is_resumed_and_named_on_log_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_on", True)
    with tracing.resumed(TRACEPARENT):
        parent = tracing.current_traceparent()
        line: dict[str, Any] = tracing.add_trace_ids(None, "info", {"event": "x"})
    assert parent is not None and parent.split("-")[1] == TRACEPARENT.split("-")[1]
    assert line["trace_id"] == TRACEPARENT.split("-")[1]
    assert tracing.current_traceparent() is None  # detached after the block


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://api.evolink.ai/v1/images/generations",
            "https://api.evolink.ai/v1/images/generations",
        ),
        (
            "https://cdn.evolink.ai/r/1.png?X-Amz-Signature=abc&token=t",
            "https://cdn.evolink.ai/r/1.png",
        ),
        ("http://user:pw@127.0.0.1:9000/bucket/k?x=1#f", "http://127.0.0.1:9000/bucket/k"),
        ("http://[::1", "<unparsable url>"),
    ],
)
def test_span_urls_keep_no_password_and_no_query(url: str, shown: str) -> None:
    assert tracing.safe_url(url) == shown
