"""Prometheus, Grafana and Docker files: they parse, and every metric they use exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from nanobanana_queue.workers import metrics
from tests.ops.compose import ROOT, services

OPS = ROOT / "ops"
PROMETHEUS = OPS / "prometheus" / "prometheus.yml"
ALERTS = OPS / "prometheus" / "alerts.yml"
DASHBOARD = OPS / "grafana" / "dashboards" / "nbq.json"

#: Metrics Flower 2.x exports (flower/events.py), with histogram series.
FLOWER_METRICS = frozenset(
    {
        "flower_events_total",
        "flower_task_runtime_seconds",
        "flower_task_runtime_seconds_bucket",
        "flower_task_runtime_seconds_sum",
        "flower_task_runtime_seconds_count",
        "flower_task_prefetch_time_seconds",
        "flower_worker_prefetched_tasks",
        "flower_worker_online",
        "flower_worker_number_of_currently_executing_tasks",
    }
)
#: Series Prometheus itself adds to every target.
PROMETHEUS_BUILTINS = frozenset({"up"})
KNOWN = metrics.series_names() | FLOWER_METRICS | PROMETHEUS_BUILTINS

_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, labels, keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group(0).lower() in _KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for panel in doc["panels"] for t in panel.get("targets", [])]


# --- the name extractor itself ---------------------------------------------------------


def test_metric_name_extractor_skips_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(nbq_polls_per_job_bucket{a="b"}[5m])))'
        ' > 3 and on (queue) up{job="x"} unless label_replace(flower_worker_online, "p",'
        ' "$1", "worker", "(.*)") * $__rate_interval'
    )
    assert metric_names(expr) == {"nbq_polls_per_job_bucket", "up", "flower_worker_online"}


# --- Prometheus -------------------------------------------------------------------------


def test_prometheus_scrapes_the_exporter_and_flower_with_basic_auth_from_files() -> None:
    doc = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert jobs["nbq"]["static_configs"][0]["targets"] == ["metrics:9808"]
    flower = jobs["flower"]
    assert flower["metrics_path"] == "/metrics"
    assert flower["static_configs"][0]["targets"] == ["flower:5555"]
    auth = flower["basic_auth"]
    assert "password" not in auth
    assert auth["password_file"] == "/run/secrets/flower_prometheus_password"
    assert "/etc/prometheus/alerts.yml" in doc["rule_files"]
    # the compose service mounts that secret, and Flower knows the scrape account
    assert services()["prometheus"]["secrets"] == ["flower_prometheus_password"]
    flower_auth = services()["flower"]["environment"]["NBQ_FLOWER_BASIC_AUTH"]
    assert f",{auth['username']}:${{FLOWER_PROMETHEUS_PASSWORD" in flower_auth


def test_every_alert_has_a_severity_summary_and_runbook() -> None:
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert "runbook" not in rule["annotations"], "the conventional name is runbook_url"
        assert rule["annotations"]["runbook_url"].startswith("docs/operations.md#"), rule["alert"]


def test_the_required_alerts_exist() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    assert "nbq_quota_breaker_open" in exprs["NbqQuotaBreakerOpen"]
    assert 'nbq_api_calls_total{status="401"}' in exprs["NbqApiKeyRejected"]
    assert "nbq_jobs_state_total" in exprs["NbqFailureRatioHigh"]
    assert "nbq_queue_length" in exprs["NbqQueueBacklogGrowing"]
    assert "flower_worker_online" in exprs["NbqNoWorkerOnline"]
    assert "nbq_enqueue_to_stored_seconds_bucket" in exprs["NbqEnqueueToStoredP95High"]
    assert "nbq_oldest_job_age_seconds" in exprs["NbqResultsNearLinkExpiry"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_uses_only_exported_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, "no metric found: the extractor or the rule is wrong"
    assert names <= KNOWN, names - KNOWN


def test_alert_runbooks_are_sections_of_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8").lower()
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert f"### {anchor}" in guide, f"docs/operations.md has no '### {rule['alert']}'"


def _promtool() -> str | None:
    return shutil.which("promtool")


@pytest.mark.skipif(_promtool() is None, reason="promtool not installed (name check only)")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [str(_promtool()), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(_promtool() is None, reason="promtool not installed (name check only)")
def test_promtool_accepts_the_config(tmp_path) -> None:
    # Given the config with its container paths pointed at local copies
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text(encoding="utf-8"))
    (tmp_path / "password").write_text("placeholder")
    text = (
        PROMETHEUS.read_text(encoding="utf-8")
        .replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml"))
        .replace("/run/secrets/flower_prometheus_password", str(tmp_path / "password"))
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    # Then promtool accepts it
    result = subprocess.run(
        [str(_promtool()), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana ----------------------------------------------------------------------------


def test_dashboard_uses_only_exported_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= KNOWN, (expr, names - KNOWN)
        used |= names
    # the panels the brief asks for: throughput, failures, quota, polls, latency, backlog,
    # credits
    for needed in (
        "nbq_jobs_state_total",
        "nbq_jobs_failed_total",
        "nbq_api_calls_total",
        "nbq_polls_per_job_bucket",
        "nbq_enqueue_to_stored_seconds_bucket",
        "nbq_queue_length",
        "nbq_credits_reserved_total",
    ):
        assert needed in used


def test_dashboard_matches_its_generator() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_dashboard", OPS / "scripts" / "build_dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads(DASHBOARD.read_text(encoding="utf-8")) == module.build()


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_dir() -> None:
    prov = OPS / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    source = ds["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    dash = yaml.safe_load((prov / "dashboards" / "nbq.yml").read_text(encoding="utf-8"))
    path = dash["providers"][0]["options"]["path"]
    assert any(v.endswith(f":{path}:ro") for v in services()["grafana"]["volumes"])
    uids = {
        t["datasource"]["uid"]
        for p in json.loads(DASHBOARD.read_text())["panels"]
        for t in p.get("targets", [])
    }
    assert uids == {source["uid"]}


# --- Docker image -----------------------------------------------------------------------


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_image_is_slim_python_311_non_root_with_nbq_entrypoint() -> None:
    text = _dockerfile()
    assert "python:3.11-slim" in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["nbq"\]', text, flags=re.MULTILINE)
    assert "PYTHONDONTWRITEBYTECODE=1" in text  # read-only root: no .pyc writes


def test_dockerignore_keeps_secrets_and_the_venv_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".env", ".venv", ".git", "tests"} <= ignored


def test_ops_yaml_and_json_files_parse() -> None:
    files = [p for p in OPS.rglob("*") if p.suffix in (".yml", ".yaml", ".json")]
    assert len(files) >= 5
    for path in files:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            json.loads(text)
        else:
            list(yaml.safe_load_all(text))
