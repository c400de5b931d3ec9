"""The worker's side of the leases (``workers/leases.py``): a consumer bootstep.

At construction (in the main process, before prefork children are forked) it names the
worker whose claims this process makes (``claimed_by``) and starts the renewing thread.
While consuming, an entry on the worker's timer publishes the delivery tags its channel
holds every third of the lease, so the reconciler can tell a dead or disconnected
channel's ``unacked`` deliveries from a live one's.

The lease names one *run* of the worker (``<hostname>#<random>``), not the hostname: a
worker restarted under the same name (a container restart keeps it) must not renew its
killed predecessor's lease, or that one's claims would never be recovered.

A prefork child killed alone (the OOM killer) leaves the main process alive and
renewing: its parent hears of it (``WorkerLostError``) and recovers that submit's claim
at once (``recover_lost_submit``) instead of after the submit time limit.
"""

from __future__ import annotations

import secrets
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery, bootsteps, signals

from nanobanana_queue.workers import leases
from nanobanana_queue.workers.contract import TASK_GENERATE, TASK_SUBMIT


class WorkerLeaseStep(bootsteps.StartStopStep):  # type: ignore[misc]
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        from nanobanana_queue.workers.runtime import get_runtime

        rt = get_runtime()
        self.enabled = rt.settings.worker_lease_s > 0
        self._entry: Any = None
        if not self.enabled:
            return
        self.hostname = f"{parent.hostname}#{secrets.token_hex(3)}"
        self.leases = leases.WorkerLeases(
            rt.redis, prefix=rt.settings.key_prefix, lease_s=rt.settings.worker_lease_s
        )
        leases.set_current_worker(self.hostname)
        leases.LeaseRenewer(self.leases, self.hostname).start()
        self._started_before = False

    def start(self, parent: Any) -> None:
        if self._started_before:
            # Started again after a lost broker connection: the old channel's deliveries
            # are held by nobody now; ask the lease passes to put them back.
            try:
                self.leases.ask_sweep()
            except Exception as exc:
                leases.log.warning("worker_sweep_request_failed", error=type(exc).__name__)
        self._started_before = True
        self._entry = parent.timer.call_repeatedly(
            self.leases.lease_s / 3, self._publish, (parent,), priority=10
        )
        self._publish(parent)

    def _publish(self, parent: Any) -> None:
        try:
            self.leases.publish_held(self.hostname, leases.held_tags(parent))
        except Exception as exc:  # the store is down: the next turn publishes again
            leases.log.warning("worker_held_publish_failed", error=type(exc).__name__)

    def stop(self, parent: Any) -> None:
        if self._entry is not None:
            self._entry.cancel()
            self._entry = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def install(app: Celery) -> None:
    """Add the step to ``app``'s consumer blueprint (before the worker builds it)."""
    app.steps["consumer"].add(WorkerLeaseStep)
    signals.task_failure.connect(_submit_process_lost, weak=False)


def _submit_process_lost(
    sender: Any = None, exception: BaseException | None = None, kwargs: Any = None, **_: Any
) -> None:
    """In the main process: a pool process died running a submit (``WorkerLostError``).
    Its job's outcome is decided now; a store that cannot be reached leaves it to the
    time-limit rule."""
    if not isinstance(exception, WorkerLostError):
        return
    if getattr(sender, "name", None) not in (TASK_GENERATE, TASK_SUBMIT):
        return
    job_id = (kwargs or {}).get("job_id")
    if not job_id or leases.current_worker() is None:
        return  # a raw generate's job id was minted in the child: the time limit decides
    from nanobanana_queue.workers.runtime import get_runtime
    from nanobanana_queue.workers.stages.reconcile import recover_lost_submit
    from nanobanana_queue.workers.tasks.base import dispatcher

    try:
        done = recover_lost_submit(
            get_runtime(), dispatcher().send, str(job_id), worker=leases.current_worker()
        )
    except Exception as exc:
        leases.log.warning("lost_submit_unrecovered", job_id=job_id, error=type(exc).__name__)
        return
    leases.log.warning("submit_process_lost", job_id=job_id, outcome=done)
