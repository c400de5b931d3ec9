"""``nbq.notify``: one webhook delivery try; the next try is this message again, later.

Runs on the ``notify`` queue (its own pool, or any worker listening to it), so no stage
ever waits for a receiver. See workers/notify/ for the promises (signature, backoff,
dead letters).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import httpx

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.app import app
from nanobanana_queue.workers.contract import TASK_NOTIFY
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.notify.config import NotifyConfig
from nanobanana_queue.workers.notify.deadletter import NotifyDeadLetters
from nanobanana_queue.workers.notify.deliver import backoff_s, deliver_once
from nanobanana_queue.workers.pipeline import NOTIFY
from nanobanana_queue.workers.runtime import get_runtime
from nanobanana_queue.workers.security.netguard import guarded_client
from nanobanana_queue.workers.stages.steps import Notify
from nanobanana_queue.workers.tasks.base import dispatcher

log = get_logger("nbq.notify")

_cache: dict[str, Any] = {}


def _parts() -> tuple[NotifyConfig, httpx.Client]:
    """This process's notify config and guarded HTTP client (rebuilt after a fork)."""
    if _cache.get("pid") != os.getpid():
        config = NotifyConfig.from_settings(get_runtime().settings)
        _cache.update(pid=os.getpid(), config=config, client=guarded_client(config.policy))
    return _cache["config"], _cache["client"]


@app.task(name=TASK_NOTIFY, bind=True, **NOTIFY.ack_options)
def notify_task(
    self: Any,
    webhook_id: str,
    job_id: str,
    event: str,
    url: str,
    payload: dict[str, Any],
    first_at: float,
    attempt: int = 0,
) -> str:
    """Try once; on failure send this delivery again after a backoff, or dead-letter it."""
    rt = get_runtime()
    config, client = _parts()
    step = Notify(webhook_id, job_id, event, url, payload, first_at, attempt)
    producer = (payload.get("data") or {}).get("producer")
    secret = config.secret_for(producer)
    if secret is None:
        return _dead(rt, step, "refused", None, "the producer's webhook secret was removed")
    tried = deliver_once(
        client, config.policy, step, secret, timeout_s=rt.settings.notify_timeout_s
    )
    if tried.outcome == "delivered":
        metrics.notification(event, "delivered")
        log.info(
            "notify_delivered",
            job_id=job_id,
            webhook_id=webhook_id,
            attempt=attempt,
            status=tried.status,
            notify_event=event,
        )
        return "delivered"
    if tried.outcome in ("gone", "refused"):
        return _dead(rt, step, tried.outcome, tried.status, tried.detail)
    settings = rt.settings
    wait_s = backoff_s(
        attempt,
        base_s=settings.notify_backoff_base_s,
        max_s=settings.notify_backoff_max_s,
        retry_after=tried.retry_after_s,
    )
    if time.time() + wait_s > first_at + settings.notify_retry_period_s:
        return _dead(rt, step, "dead", tried.status, tried.detail)
    metrics.notification(event, "retried")
    log.warning(
        "notify_retry",
        job_id=job_id,
        webhook_id=webhook_id,
        attempt=attempt,
        status=tried.status,
        detail=tried.detail,
        retry_after_s=tried.retry_after_s,
        retry_in_s=round(wait_s, 3),
        notify_event=event,
    )
    dispatcher().send(replace(step, attempt=attempt + 1, after_s=wait_s))
    return "retry"


def _dead(rt: Any, step: Notify, outcome: str, status: int | None, detail: str) -> str:
    NotifyDeadLetters(rt.redis, prefix=rt.settings.key_prefix).add(
        step, reason=detail or outcome, status=status
    )
    metrics.notification(step.event, outcome)
    log.error(
        "notify_dead_lettered",
        job_id=step.job_id,
        webhook_id=step.webhook_id,
        attempt=step.attempt,
        outcome=outcome,
        status=status,
        detail=detail,
        notify_event=step.event,
        replay=f"nbq notify replay {step.webhook_id}",
    )
    return outcome
