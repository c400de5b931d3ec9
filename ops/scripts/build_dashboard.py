"""Write ops/grafana/dashboards/nbq.json from the panel list below.

The dashboard is generated so that every panel has the same shape and the expressions
sit in one readable list (tests/ops check each metric name against the exporter's).
Run from the repo root: ``python ops/scripts/build_dashboard.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "grafana" / "dashboards" / "nbq.json"
DATASOURCE = {"type": "prometheus", "uid": "nbq-prometheus"}

#: (row title, [(panel title, unit, [(legend, expr)])])
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    (
        "Throughput",
        [
            (
                "Jobs entering each state (per min)",
                "short",
                [
                    (
                        "{{state}}",
                        "sum by (state) (rate(nbq_jobs_state_total[$__rate_interval])) * 60",
                    ),
                ],
            ),
            (
                "Jobs in each active state",
                "short",
                [
                    ("{{state}}", "sum by (state) (nbq_jobs_in_state)"),
                ],
            ),
            (
                "Stored vs failed (per hour)",
                "short",
                [
                    (
                        "{{state}}",
                        "sum by (state) "
                        '(increase(nbq_jobs_state_total{state=~"stored|failed"}[1h]))',
                    ),
                ],
            ),
        ],
    ),
    (
        "Failures and quota",
        [
            (
                "Failures by reason (per hour)",
                "short",
                [
                    ("{{reason}}", "sum by (reason) (increase(nbq_jobs_failed_total[1h]))"),
                ],
            ),
            (
                "Quota and auth errors (per 5 min)",
                "short",
                [
                    (
                        "402 {{code}}",
                        'sum by (code) (increase(nbq_api_calls_total{status="402"}[5m]))',
                    ),
                    ("401", 'sum(increase(nbq_api_calls_total{status="401"}[5m]))'),
                    ("429", 'sum(increase(nbq_api_calls_total{status="429"}[5m]))'),
                ],
            ),
            (
                "Quota breaker open",
                "bool_on_off",
                [
                    ("open", "max(nbq_quota_breaker_open)"),
                ],
            ),
            (
                "API calls by endpoint and status (per s)",
                "reqps",
                [
                    (
                        "{{endpoint}} {{status}}",
                        "sum by (endpoint, status) (rate(nbq_api_calls_total[$__rate_interval]))",
                    ),
                ],
            ),
        ],
    ),
    (
        "Latency and polling",
        [
            (
                "Enqueue to stored",
                "s",
                [
                    (
                        f"p{q}",
                        f"histogram_quantile(0.{q}, sum by (le) "
                        "(rate(nbq_enqueue_to_stored_seconds_bucket[$__rate_interval])))",
                    )
                    for q in ("50", "95", "99")
                ],
            ),
            (
                "Polls per job",
                "short",
                [
                    (
                        "p50",
                        "histogram_quantile(0.5, sum by (le) "
                        "(rate(nbq_polls_per_job_bucket[$__rate_interval])))",
                    ),
                    (
                        "p95",
                        "histogram_quantile(0.95, sum by (le) "
                        "(rate(nbq_polls_per_job_bucket[$__rate_interval])))",
                    ),
                    (
                        "mean",
                        "sum(rate(nbq_polls_per_job_sum[$__rate_interval])) / "
                        "sum(rate(nbq_polls_per_job_count[$__rate_interval]))",
                    ),
                ],
            ),
            (
                "Oldest job age per state",
                "s",
                [
                    ("{{state}}", "max by (state) (nbq_oldest_job_age_seconds)"),
                ],
            ),
            (
                "Task runtime p95 (Flower)",
                "s",
                [
                    (
                        "{{task}}",
                        "histogram_quantile(0.95, sum by (le, task) "
                        "(rate(flower_task_runtime_seconds_bucket[$__rate_interval])))",
                    ),
                ],
            ),
        ],
    ),
    (
        "Queues and workers",
        [
            (
                "Backlog per queue",
                "short",
                [
                    ("{{queue}}", "sum by (queue) (nbq_queue_length)"),
                    ("unacked (held countdowns)", "max(nbq_broker_unacked_messages)"),
                ],
            ),
            (
                "Workers online (Flower)",
                "short",
                [
                    ("online", "sum(flower_worker_online)"),
                ],
            ),
            (
                "Tasks executing per worker (Flower)",
                "short",
                [
                    (
                        "{{worker}}",
                        "sum by (worker) (flower_worker_number_of_currently_executing_tasks)",
                    ),
                ],
            ),
            (
                "Limiter waits (per min)",
                "short",
                [
                    (
                        "{{kind}}",
                        "sum by (kind) (rate(nbq_limiter_waits_total[$__rate_interval])) * 60",
                    ),
                ],
            ),
        ],
    ),
    (
        "Fair share between producers",
        [
            (
                "Creates per producer (per min): each one's share",
                "short",
                [
                    (
                        "{{producer}}",
                        "sum by (producer) "
                        "(rate(nbq_producer_creates_total[$__rate_interval])) * 60",
                    ),
                ],
            ),
            (
                "Jobs waiting per producer",
                "short",
                [
                    ("{{producer}}", "sum by (producer) (nbq_producer_jobs_waiting)"),
                ],
            ),
            (
                "Enqueue to stored p95 per producer",
                "s",
                [
                    (
                        "{{producer}}",
                        "histogram_quantile(0.95, sum by (producer, le) "
                        "(rate(nbq_producer_enqueue_to_stored_seconds_bucket"
                        "[$__rate_interval])))",
                    ),
                ],
            ),
        ],
    ),
    (
        "Credits and storage",
        [
            (
                "Credits reserved (per hour)",
                "short",
                [
                    ("credits", "sum(increase(nbq_credits_reserved_total[1h]))"),
                ],
            ),
            (
                "Credits reserved today (UTC, approx.)",
                "short",
                [
                    ("credits", "sum(increase(nbq_credits_reserved_total[24h]))"),
                ],
            ),
            (
                "Bytes stored (per s)",
                "Bps",
                [
                    ("bytes", "sum(rate(nbq_bytes_stored_total[$__rate_interval]))"),
                ],
            ),
            (
                "Metrics health",
                "short",
                [
                    ("redis up", "min(nbq_metrics_redis_up)"),
                    ("errors (per 15 min)", "sum(increase(nbq_metrics_errors_total[15m]))"),
                ],
            ),
        ],
    ),
]


def _panel(
    pid: int, title: str, unit: str, targets: list[tuple[str, str]], x: int, y: int
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 6, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y = pid + 1, y + 1
        for i, (title, unit, targets) in enumerate(row_panels):
            panels.append(_panel(pid, title, unit, targets, x=(i % 4) * 6, y=y + (i // 4) * 8))
            pid += 1
        y += 8 * ((len(row_panels) + 3) // 4)
    return {
        "uid": "nbq-overview",
        "title": "nanobanana-queue",
        "tags": ["nbq", "celery"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "editable": False,
        "panels": panels,
        "templating": {"list": []},
        "annotations": {"list": []},
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
