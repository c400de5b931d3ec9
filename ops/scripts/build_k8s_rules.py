"""Write ops/k8s/base/prometheusrule.yaml from ops/prometheus/alerts.yml (one source).

    python ops/scripts/build_k8s_rules.py

The PrometheusRule's ``spec.groups`` are alerts.yml's groups, rule for rule;
tests/ops/test_k8s.py fails when the two differ (run this after editing the alerts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
OUT = ROOT / "ops" / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from ops/prometheus/alerts.yml by ops/scripts/build_k8s_rules.py: edit the
# alerts there and re-run the script (a test keeps the two equal). Add the label your
# Prometheus's ruleSelector matches (kube-prometheus: release=<name>) in an overlay.
"""


def build() -> dict[str, Any]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "nbq", "labels": {"app.kubernetes.io/name": "nbq"}},
        "spec": {"groups": groups},
    }


def render() -> str:
    body = yaml.safe_dump(build(), sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def main() -> None:
    OUT.write_text(render(), encoding="utf-8")
    print(OUT.relative_to(ROOT))


if __name__ == "__main__":
    main()
