"""Commands that run parts of the system: worker, flower, metrics, reconcile."""

from __future__ import annotations

from typing import Annotated

import typer

from nanobanana_queue.workers.cli.common import fail_on_config_error
from nanobanana_queue.workers.contract import DECLARED_QUEUES


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("flower")(flower)
    app.command("metrics")(metrics)
    app.command("reconcile")(reconcile)


@fail_on_config_error
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = ",".join(
        DECLARED_QUEUES
    ),
    concurrency: Annotated[int | None, typer.Option(min=1, help="Child processes/threads.")] = None,
    pool: Annotated[str, typer.Option(help="prefork | threads | solo | gevent | eventlet")] = (
        "prefork"
    ),
    autoscale: Annotated[str | None, typer.Option(help="MAX,MIN processes.")] = None,
    hostname: Annotated[str | None, typer.Option(help="Worker node name.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker for some or all queues (one pool per queue in production)."""
    from nanobanana_queue.workers.cli.run import run_worker

    run_worker(
        queues=queues,
        concurrency=concurrency,
        pool=pool,
        autoscale=autoscale,
        hostname=hostname,
        loglevel=loglevel,
    )


@fail_on_config_error
def flower(
    port: Annotated[int | None, typer.Option(help="HTTP port (default NBQ_FLOWER_PORT).")] = None,
    address: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without auth (127.0.0.1 only).")
    ] = False,
    max_tasks: Annotated[int | None, typer.Option(help="Tasks kept in memory.")] = None,
    db: Annotated[str | None, typer.Option(help="Persist state to this file.")] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Viewers only: no control actions.")
    ] = False,
) -> None:
    """Run Flower on this project's Celery app, with basic auth from NBQ_FLOWER_BASIC_AUTH."""
    from nanobanana_queue.workers.cli.run import run_flower

    run_flower(
        port=port,
        address=address,
        no_auth=no_auth,
        max_tasks=max_tasks,
        db=db,
        read_only=read_only,
    )


@fail_on_config_error
def metrics(
    port: Annotated[int | None, typer.Option(help="HTTP port (default NBQ_METRICS_PORT).")] = None,
    address: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
) -> None:
    """Serve the project's Prometheus metrics (read from Redis, correct across workers)."""
    from nanobanana_queue.workers.cli.run import run_metrics

    run_metrics(port=port, address=address)


@fail_on_config_error
def reconcile(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between passes (NBQ_RECONCILE_INTERVAL_S).")
    ] = None,
) -> None:
    """Re-drive jobs stuck in a state past their deadline (safe to run on every host)."""
    from nanobanana_queue.workers.cli.run import run_reconcile

    run_reconcile(once=once, interval_s=interval)
