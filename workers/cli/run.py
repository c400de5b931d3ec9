"""Long-running processes started by the CLI (worker, flower, metrics, reconcile).

Each first checks its optional dependencies: without the [worker] extra it says so in one
line (``pip install 'nanobanana-queue[worker]'``) instead of a traceback.
"""

from __future__ import annotations

import os

from nanobanana_queue.workers.brokers import broker_kind
from nanobanana_queue.workers.extras import require_extra
from nanobanana_queue.workers.settings import ConfigError, get_settings


def run_worker(
    *,
    queues: str,
    concurrency: int | None,
    pool: str,
    autoscale: str | None,
    hostname: str | None,
    loglevel: str,
) -> None:
    require_extra("worker", "minio", what="nbq worker")
    from nanobanana_queue.workers.app import app

    settings = get_settings()
    if {"submit", "poll"} & set(queues.split(",")):
        settings.require("evolink_api_key")  # download-only pools never see the key
    if "download" in queues.split(","):
        settings.require("s3_access_key", "s3_secret_key")
    # Gossip off: nothing here uses Celery's elections or its view of other workers
    # (worker liveness is the job store's lease, workers/leases.py), and after a lost
    # broker connection Celery 5.7 stops its consumer through ``c.connection``, already
    # None: "Error on restarting Gossip: AttributeError('NoneType' … 'connection_errors')".
    argv = ["worker", "-Q", queues, "-P", pool, "-l", loglevel, "-E", "--without-gossip"]
    if concurrency:
        argv += ["-c", str(concurrency)]
    if autoscale:
        if broker_kind(settings.broker_url) == "amqp":
            raise ConfigError(
                "--autoscale does nothing on RabbitMQ quorum queues (no global QoS: the "
                "prefetch count cannot follow the pool size); use a fixed --concurrency and "
                "scale worker replicas on the queue length (KEDA: ops/k8s) instead"
            )
        argv += ["--autoscale", autoscale]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(argv)


#: Flower's task list columns (its default lacks ``exception`` and ``retries``).
FLOWER_TASK_COLUMNS = "name,state,exception,retries,received,runtime,worker,uuid"


def run_flower(
    *,
    port: int | None,
    address: str,
    no_auth: bool,
    max_tasks: int | None,
    db: str | None,
    read_only: bool = False,
) -> None:
    require_extra("worker", "flower", what="nbq flower")
    from nanobanana_queue.workers.app import app
    from nanobanana_queue.workers.startup import configure_process

    configure_process()
    settings = get_settings()
    argv = [
        "flower",
        f"--port={port or settings.flower_port}",
        f"--address={address}",
        f"--max_tasks={max_tasks or settings.flower_max_tasks}",
        # The exception column shows why a task failed (its reason's class, workers/errors.py)
        # or retried (quota) right in the task list, without opening each task or searching.
        f"--tasks_columns={FLOWER_TASK_COLUMNS}",
    ]
    if no_auth:
        if address not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError("--no-auth is only allowed with --address 127.0.0.1")
    else:
        settings.require("flower_basic_auth")
        assert settings.flower_basic_auth is not None
        # Through Flower's own environment option, never argv (visible to `ps`).
        os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    if settings.broker_api_url is not None:
        # RabbitMQ's management API for the Broker tab (Flower's --broker_api); through
        # the environment like the login, since the URL carries a password.
        os.environ["FLOWER_BROKER_API"] = settings.broker_api_url.get_secret_value()
    if read_only:
        argv.append("--read_only=True")
    if db:
        argv += ["--persistent=True", f"--db={db}"]
    _protect_flower_metrics()
    app.start(argv)


def _protect_flower_metrics() -> None:
    """Flower 2.2 serves ``/metrics`` without auth, and it names every worker host and task:
    put it behind the same login as the UI (``/healthcheck`` stays open for probes)."""
    from flower.views.monitor import Metrics
    from tornado.web import authenticated

    if not getattr(Metrics.get, "nbq_protected", False):
        protected = authenticated(Metrics.get)
        protected.nbq_protected = True  # type: ignore[attr-defined]
        Metrics.get = protected


def run_metrics(*, port: int | None, address: str) -> None:
    require_extra("worker", "prometheus_client", what="nbq metrics")
    from nanobanana_queue.workers.metrics_exporter import serve_metrics

    settings = get_settings()
    serve_metrics(settings, address=address, port=port or settings.metrics_port)


def run_reconcile(*, once: bool, interval_s: float | None) -> None:
    require_extra("worker", "minio", what="nbq reconcile")
    from nanobanana_queue.workers.runtime import get_runtime
    from nanobanana_queue.workers.stages.reconcile import reconcile_once
    from nanobanana_queue.workers.startup import configure_process
    from nanobanana_queue.workers.tasks.base import dispatcher
    from nanobanana_queue.workers.tasks.reconcile import reconcile_forever

    configure_process()
    settings = get_settings()
    if once:
        report = reconcile_once(get_runtime(), dispatcher().send)
        print(f"re-driven: {report.total}")
        return
    from nanobanana_queue.workers.probes import RECONCILE, Heartbeat

    interval_s = interval_s or settings.reconcile_interval_s
    reconcile_forever(interval_s, heartbeat=Heartbeat(settings.health_dir, RECONCILE, interval_s))
