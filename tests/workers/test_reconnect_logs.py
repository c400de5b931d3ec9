"""After a lost broker connection a worker logs one warning, not tracebacks (issue 26)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.thread import TaskPool as ThreadPool

from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.startup import _no_cancel_on_connection_loss_without_kill


def test_nbq_worker_runs_without_gossip(monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery 5.7 stops Gossip through a connection it already set to None after a loss
    # ("Error on restarting Gossip"); nothing here uses gossip.
    from nanobanana_queue.workers.app import app
    from nanobanana_queue.workers.cli.run import run_worker
    from nanobanana_queue.workers.settings import get_settings

    monkeypatch.setenv("NBQ_S3_ACCESS_KEY", "a")
    monkeypatch.setenv("NBQ_S3_SECRET_KEY", "s")
    started: list[list[str]] = []
    monkeypatch.setattr(app, "worker_main", lambda argv: started.append(argv))
    get_settings.cache_clear()
    try:
        run_worker(
            queues="download", concurrency=2, pool="threads", autoscale=None,
            hostname=None, loglevel="INFO",
        )  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert "--without-gossip" in started[0] and "-E" in started[0]


@pytest.mark.parametrize(("pool", "cancels"), [(ThreadPool, False), (PreforkPool, True)])
def test_only_a_pool_that_can_kill_a_job_cancels_it_on_connection_loss(
    pool: type, cancels: bool
) -> None:
    app = create_app()
    app.conf.worker_cancel_long_running_tasks_on_connection_loss = True
    _no_cancel_on_connection_loss_without_kill(instance=SimpleNamespace(pool_cls=pool, app=app))
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is cancels
