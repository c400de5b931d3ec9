"""A real Prometheus: promtool unit tests for the alerts, and the quota alert live.

Debian's ``prometheus`` package brings both binaries (``.ci/run`` installs it); where
either is missing these tests skip, naming it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.procs import free_port, port_open, start, stop, wait_until
from tests.support.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "ops" / "prometheus" / "tests" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ALERT_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_rule_has_a_promtool_unit_test_that_fires_it() -> None:
    rules = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    }
    fired = {
        case["alertname"]
        for group in yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert len(rules) == 16
    assert rules - fired == set()


def _rules_with_short_for(tmp_path: Path) -> Path:
    """The shipped rules with every ``for:`` shortened to 3s (the test's copy)."""
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "3s"
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    return path


def _alert_states(url: str, name: str) -> set[str]:
    response = httpx.get(f"{url}/api/v1/alerts", timeout=5, trust_env=False)
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json()["data"]["alerts"]
    return {a["state"] for a in alerts if a["labels"].get("alertname") == name}


@pytest.mark.integration
@pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)"
)
def test_a_402_storm_takes_the_quota_alert_from_pending_to_firing(
    stack: Stack, tmp_path: Path
) -> None:
    # Given `nbq metrics` on the stack's Redis and a real Prometheus scraping it every second
    metrics_port, prom_port = free_port(), free_port()
    exporter = start(
        [
            sys.executable,
            "-m",
            "nanobanana_queue.producers.cli.main",
            "metrics",
            "--port",
            str(metrics_port),
        ],
        env=stack.env(),
        log=tmp_path / "metrics.log",
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(_rules_with_short_for(tmp_path))],
                "scrape_configs": [
                    {
                        "job_name": "nbq",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    prometheus = start(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        log=tmp_path / "prometheus.log",
    )
    url = f"http://127.0.0.1:{prom_port}"
    try:
        wait_until(lambda: port_open(metrics_port), timeout_s=30, what="nbq metrics")
        wait_until(lambda: port_open(prom_port), timeout_s=60, what="prometheus")

        def scraped() -> bool:
            answer = httpx.get(
                f"{url}/api/v1/query", params={"query": 'up{job="nbq"}'}, timeout=5,
                trust_env=False,
            ).json()  # fmt: skip
            return any(r["value"][1] == "1" for r in answer["data"]["result"])

        wait_until(scraped, timeout_s=60, interval_s=0.5, what="prometheus to scrape nbq")
        assert _alert_states(url, "NbqQuotaBreakerOpen") == set()

        # When the API answers 402 to every create while jobs are submitted
        stack.emulator.set_credits(0)
        stack.start_worker(name="w1")
        producer = stack.producer()
        job_ids = [
            producer.enqueue({"prompt": f"storm {i}", "quality": "1K"}).job_id for i in range(3)
        ]

        # Then the quota alert goes pending, then firing
        seen: list[set[str]] = []

        def state_is(wanted: str) -> bool:
            states = _alert_states(url, "NbqQuotaBreakerOpen")
            if not seen or seen[-1] != states:
                seen.append(states)
            return wanted in states

        wait_until(lambda: state_is("pending"), timeout_s=60, interval_s=0.2, what="pending")
        wait_until(lambda: state_is("firing"), timeout_s=60, interval_s=0.2, what="firing")
        print("NbqQuotaBreakerOpen states seen:", seen)
        assert {"pending"} in seen and seen[-1] == {"firing"}

        # And with credits back, the jobs complete (they waited, none failed)
        stack.emulator.set_credits(None)
        records = stack.wait_all(producer, job_ids, timeout_s=90)
        assert {r.state.value for r in records.values()} == {"stored"}
    finally:
        stop(prometheus, timeout_s=15)
        stop(exporter, timeout_s=15)
