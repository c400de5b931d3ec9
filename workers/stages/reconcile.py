"""Reconciler: the job store drives recovery, not the broker's visibility timeout.

A task message lost with a SIGKILLed worker comes back (Redis broker) only after the
visibility timeout — an hour by default. The reconciler scans the per-state indexes for
jobs idle past a deadline and re-drives the next stage. Every re-drive goes through the
same state-checked transitions as the stages (and a claim on the exact ``updated_at`` it
saw), so it never causes a second create, and it is safe to run on every host at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from amqp.exceptions import AMQPError
from kombu.exceptions import KombuError

from nanobanana_queue.workers import broker_unacked, tracing
from nanobanana_queue.workers.broker_queues import amqp_queue_lengths, queue_lengths
from nanobanana_queue.workers.broker_unacked import stale_tags
from nanobanana_queue.workers.brokers import broker_kind
from nanobanana_queue.workers.contract import ALL_QUEUES, QUEUE_DOWNLOAD, QUEUE_SUBMIT
from nanobanana_queue.workers.errors import MAX_QUOTA_WAIT_S
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.leases import WorkerLeases
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.notify.outbox import redeliver as redeliver_notifications
from nanobanana_queue.workers.resilience.credits import day_of
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages.common import new_token, now
from nanobanana_queue.workers.stages.steps import Adopt, Download, Message, Poll, Send, Submit

log = get_logger("nbq.reconcile")

#: How many ids one pass reads per state (the rest wait for the next pass).
BATCH = 500
#: While a stage's queue holds messages, its idle jobs wait this many times longer
#: before a re-drive (NBQ_STUCK_AFTER_S 120 s → 20 min).
BACKLOG_HOLD_FACTOR = 10


@dataclass
class ReconcileReport:
    requeued_submits: list[str] = field(default_factory=list)
    recovered_submitting: list[str] = field(default_factory=list)
    repolled: list[str] = field(default_factory=list)
    redownloaded: list[str] = field(default_factory=list)
    #: ``outcome_unknown`` jobs failed at their deadline, and those sent to adoption.
    unknown_expired: list[str] = field(default_factory=list)
    readopted: list[str] = field(default_factory=list)
    #: Queues whose waiting messages made this pass hold their stage's re-drives longer.
    held_for_backlog: list[str] = field(default_factory=list)
    #: Workers whose lease lapsed (workers/leases.py), and the broker deliveries no live
    #: worker held that were put back on their queues.
    dead_workers: list[str] = field(default_factory=list)
    restored_deliveries: int = 0
    #: Credit holds freed: their job was never recorded (its producer died) or has ended.
    holds_released: list[str] = field(default_factory=list)
    #: Jobs whose end was told again from the notify outbox (its first send was lost).
    notify_redelivered: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return (
            len(self.requeued_submits)
            + len(self.recovered_submitting)
            + len(self.repolled)
            + len(self.redownloaded)
            + len(self.unknown_expired)
            + len(self.readopted)
            + self.restored_deliveries
            + len(self.holds_released)
            + len(self.notify_redelivered)
        )


def reconcile_once(rt: Runtime, send: Send) -> ReconcileReport:
    """One pass: each re-drive is a claim on the record, then a step ``send`` dispatches."""
    report = ReconcileReport()
    if tracing.enabled():
        send = _in_job_trace(rt, send)
    rt.epoch().maybe_check()  # an idle worker still notices a flushed store
    stuck_after_s = rt.settings.stuck_after_s
    cutoff = now() - stuck_after_s
    # A job idle behind a long queue has not lost its message: it is waiting its turn.
    # Re-driving it adds a duplicate to that very queue on every pass (a backlog longer
    # than NBQ_STUCK_AFTER_S fed itself that way). So while the stage's queue holds
    # messages, queued and downloading jobs are re-driven only after BACKLOG_HOLD_FACTOR
    # times the usual idle time (a message lost under continuous load is still found).
    # Submitting and generating jobs are never held: their messages are not in a queue
    # (an early-acked submit, countdown polls) and a backlog says nothing about them.
    backlog = _waiting_messages(rt)
    report.held_for_backlog = sorted(q for q, n in backlog.items() if n > 0)
    if report.held_for_backlog:
        log.info("reconcile_holds_for_backlog", queues=backlog)

    def idle_cutoff(queue: str, idle_s: float) -> float:
        return now() - idle_s * (BACKLOG_HOLD_FACTOR if backlog.get(queue) else 1)

    # Queued and idle: the producer died before sending, or the message was lost. While
    # the breaker is open, waiting jobs touch their record on every hop (at most
    # MAX_QUOTA_WAIT_S apart), so only one idle for two hops has lost its message.
    queued_idle_s = stuck_after_s
    if rt.breaker.status().is_open:
        queued_idle_s = max(stuck_after_s, 2 * MAX_QUOTA_WAIT_S)
    _requeue_queued(rt, send, report, idle_cutoff(QUEUE_SUBMIT, queued_idle_s))
    reap_dead_workers(rt, send, report, sweep=True)
    _recover_submitting(rt, send, report, cutoff)
    _repoll_generating(rt, send, report, cutoff)
    _reconcile_unknown_outcomes(
        rt, send, report, now() - min(stuck_after_s, rt.settings.outcome_unknown_wait_s)
    )
    # Downloading and idle longer than a download may take: the download was lost.
    download_cutoff = idle_cutoff(
        QUEUE_DOWNLOAD, max(stuck_after_s, rt.settings.download_timeout_s * 1.5)
    )
    _redownload(rt, send, report, download_cutoff)
    _release_stray_holds(rt, report, older_than_s=stuck_after_s)
    # Ends whose nbq.notify / on_done send was lost with its process (the notify outbox).
    report.notify_redelivered = redeliver_notifications(rt.store, before=cutoff, limit=BATCH)

    if report.total:
        log.warning(
            "reconciled",
            requeued=len(report.requeued_submits),
            recovered_submitting=len(report.recovered_submitting),
            repolled=len(report.repolled),
            redownloaded=len(report.redownloaded),
            unknown_expired=len(report.unknown_expired),
            readopted=len(report.readopted),
            holds_released=len(report.holds_released),
            notify_redelivered=len(report.notify_redelivered),
            restored_deliveries=report.restored_deliveries,
            dead_workers=report.dead_workers,
        )
    return report


def reap_dead_workers(
    rt: Runtime, send: Send, report: ReconcileReport | None = None, *, sweep: bool = False
) -> ReconcileReport:
    """The lease pass (cheap, run every third of ``NBQ_WORKER_LEASE_S``): recover at once
    the ``submitting`` jobs of workers whose lease lapsed, and put back the Redis broker's
    ``unacked`` deliveries older than a lease that no live worker holds (workers/leases.py).

    The sweep of ``unacked`` reads every live worker's held tags, so between full passes
    it runs only while one is wanted: for two leases after a worker died or reconnected.
    A full pass (``sweep``) always sweeps.
    """
    report = report if report is not None else ReconcileReport()
    lease_s = rt.settings.worker_lease_s
    if lease_s <= 0:
        return report
    leases = WorkerLeases(rt.redis, prefix=rt.settings.key_prefix, lease_s=lease_s)
    try:
        alive, dead = leases.split()
    except redis.RedisError as exc:
        log.warning("reap_leases_unknown", error=type(exc).__name__)
        return report
    if dead:
        _recover_submitting(rt, send, report, now(), dead_workers=dead)
        _repoll_generating(rt, send, report, now(), dead_workers=dead)
        leases.ask_sweep()  # its youngest deliveries are found once older than a lease
    recent_loss = sweep or bool(dead) or leases.sweep_wanted()
    if recent_loss and not sweep:
        _redrive_overdue(rt, send, report, lease_s)
    broker = rt.broker()
    if broker is not None and recent_loss:
        try:
            held = leases.held_by(alive)
            orphans = [
                tag
                for tag in stale_tags(broker, delivered_before=now() - lease_s)
                if tag not in held
            ]
            report.restored_deliveries += broker_unacked.restore(rt.settings, orphans)
        except (redis.RedisError, OSError, KombuError) as exc:
            log.warning("reap_unacked_failed", error=type(exc).__name__)
            return report  # dead workers stay known: the next pass retries their deliveries
    for host in sorted(dead):
        leases.forget(host)
        report.dead_workers.append(host)
    if report.dead_workers or report.restored_deliveries:
        log.warning(
            "reaped",
            dead_workers=report.dead_workers,
            restored_deliveries=report.restored_deliveries,
            recovered_submitting=len(report.recovered_submitting),
            repolled=len(report.repolled),
        )
    return report


def _redrive_overdue(rt: Runtime, send: Send, report: ReconcileReport, lease_s: float) -> None:
    """For two leases after a worker died or lost its connection: re-drive the jobs whose
    message a lease does not cover — one kombu had popped (BRPOP) but not yet recorded in
    ``unacked`` when the process died is in neither the queue nor ``unacked``. A poll
    overdue by a lease, a queued job idle for a lease with its queue empty and the
    breaker closed, a download idle 1.5 x its timeout: re-driven now, not after
    ``NBQ_STUCK_AFTER_S``. Every re-drive is a claim a live duplicate loses (the poll
    token, the submit claim, the download's state check)."""
    try:
        backlog = _waiting_messages(rt)
        _repoll_generating(rt, send, report, now() - lease_s)
        if not backlog.get(QUEUE_SUBMIT) and not rt.breaker.status().is_open:
            _requeue_queued(rt, send, report, now() - lease_s, quiet_only=True)
        if not backlog.get(QUEUE_DOWNLOAD):
            _redownload(rt, send, report, now() - rt.settings.download_timeout_s * 1.5)
    except redis.RedisError as exc:
        log.warning("redrive_overdue_failed", error=type(exc).__name__)


def _in_job_trace(rt: Runtime, send: Send) -> Send:
    """``send`` inside the trace the job started at its enqueue (its record's
    ``traceparent``): a re-driven message joins the job's trace. Only with tracing on
    (one more read of the record per re-drive)."""

    def send_in_trace(step: Message) -> None:
        record = rt.store.get(step.job_id)
        with tracing.resumed(record.traceparent if record else None):
            send(step)

    return send_in_trace


def _requeue_queued(
    rt: Runtime, send: Send, report: ReconcileReport, cutoff: float, *, quiet_only: bool = False
) -> None:
    """Queued jobs idle since ``cutoff``: their submit message is sent again. With
    ``quiet_only``, not those waiting for a reason of their own (a back-off, the fair
    share, a rate limit: their deferred submit is on its way)."""
    for job_id in rt.store.ids_in_state(JobState.QUEUED, updated_before=cutoff, limit=BATCH):
        if quiet_only:
            record = _read(rt, job_id)
            if record is None or record.waiting_reason or record.state is not JobState.QUEUED:
                continue
        if _touch(rt, job_id, JobState.QUEUED) is not None:
            send(Submit(job_id))
            report.requeued_submits.append(job_id)


def _recover_submitting(
    rt: Runtime,
    send: Send,
    report: ReconcileReport,
    cutoff: float,
    *,
    dead_workers: set[str] | None = None,
) -> None:
    """Submitting and idle: the submit worker died mid-create (its message was acked early).

    With ``dead_workers`` (the lease pass): exactly the jobs those workers claimed, at
    once — a worker whose lease lapsed runs no create any more. Otherwise only once a
    claim is older than a submit may live (its task's hard time limit): a live submit may
    spend that long on the create and on recording its task id through a store failover,
    and re-driving it would declare a live create's outcome unknown.
    """
    claim_limit_s = submit_time_limit_s(rt.settings)
    for job_id in rt.store.ids_in_state(JobState.SUBMITTING, updated_before=cutoff, limit=BATCH):
        record = _read(rt, job_id)
        if record is None or record.state is not JobState.SUBMITTING:
            continue
        if dead_workers is not None:
            if not record.claimed_by or record.claimed_by not in dead_workers:
                continue
        else:
            claimed_at = record.state_times.get(JobState.SUBMITTING.value, record.updated_at)
            if now() - claimed_at < claim_limit_s:
                continue
        if _recover_claim(rt, send, record):
            report.recovered_submitting.append(job_id)


def _recover_claim(rt: Runtime, send: Send, record: JobRecord) -> bool:
    """A lost submit's claim ends: the create it may have sent has an unknown outcome
    (held, never resent), and a new submit decides what happens next."""
    _, applied = rt.store.apply(
        lifecycle.RECOVER_SUBMIT,
        record.job_id,
        expect={"updated_at": record.updated_at},  # its create's outcome: unknown
    )
    if applied:
        send(Submit(record.job_id))
    return bool(applied)


def recover_lost_submit(rt: Runtime, send: Send, job_id: str, *, worker: str | None) -> str:
    """The worker's pool lost the process running this job's submit (a prefork child
    killed alone, e.g. by the OOM killer): decide now what the time-limit rule would
    decide after ``NBQ_SUBMIT_TIME_LIMIT_S``. A claim of this worker's is recovered as
    the lease pass recovers a dead worker's (outcome unknown, never resent); a job the
    child had not claimed yet gets its submit message again (its message was acked
    before the run); anything else moved on and is left alone. Returns what was done."""
    record = _read(rt, job_id)
    if record is None:
        return "gone"
    if record.state is JobState.QUEUED:
        send(Submit(job_id))
        return "resubmitted"
    if record.state is not JobState.SUBMITTING or not worker or record.claimed_by != worker:
        return "moved_on"
    return "recovered" if _recover_claim(rt, send, record) else "moved_on"


def _repoll_generating(
    rt: Runtime,
    send: Send,
    report: ReconcileReport,
    cutoff: float,
    *,
    dead_workers: set[str] | None = None,
) -> None:
    """Generating with no poll due for a long time: the poll chain was lost.

    With ``dead_workers`` (the lease pass): the jobs whose last poll those workers
    claimed, at once. A poll rotates the token when it claims, so the message of a poll
    cut off mid-query, even put back from ``unacked``, is stale: only a new chain moves
    the job (a restored countdown poll it outdates ends as ``stale_token``).
    """
    for job_id in rt.store.ids_in_state(JobState.GENERATING, updated_before=cutoff, limit=BATCH):
        record = _read(rt, job_id)
        if record is None or record.state is not JobState.GENERATING:
            continue
        if dead_workers is not None:
            if not record.claimed_by or record.claimed_by not in dead_workers:
                continue
        elif record.next_poll_at is not None and record.next_poll_at > cutoff:
            continue
        token = new_token()
        _, applied = rt.store.apply(
            lifecycle.CLAIM_POLL,
            job_id,
            expect={"poll_token": record.poll_token},
            poll_token=token,
            next_poll_at=now(),
        )
        if applied:
            send(Poll(job_id, token, evolink_task_id=record.evolink_task_id))
            report.repolled.append(job_id)


def _redownload(rt: Runtime, send: Send, report: ReconcileReport, cutoff: float) -> None:
    """Downloading jobs idle since ``cutoff``: their download message is sent again."""
    for job_id in rt.store.ids_in_state(JobState.DOWNLOADING, updated_before=cutoff, limit=BATCH):
        task_id = _touch(rt, job_id, JobState.DOWNLOADING)
        if task_id is not None:
            send(Download(job_id, evolink_task_id=task_id or None))
            report.redownloaded.append(job_id)


def submit_time_limit_s(settings: Settings) -> float:
    """The longest a submit may hold its claim: the hard time limit of the tasks that run
    one (``nbq.submit``; ``nbq.generate`` submits inline), after which it is killed."""
    from nanobanana_queue.workers.app import (
        submit_time_limits_s,  # the Celery configuration's own numbers
    )

    return submit_time_limits_s(settings)[1]


def _reconcile_unknown_outcomes(
    rt: Runtime, send: Send, report: ReconcileReport, cutoff: float
) -> None:
    """``outcome_unknown`` jobs: fail those past their deadline (no callback came); re-send
    a lost adoption of a task a callback already named. Never calls the API."""
    from nanobanana_queue.workers.stages.adopt import unknown_outcome_error
    from nanobanana_queue.workers.stages.common import fail_job

    for job_id in rt.store.ids_in_state(
        JobState.OUTCOME_UNKNOWN, updated_before=cutoff, limit=BATCH
    ):
        record = _read(rt, job_id)
        if record is None or record.state is not JobState.OUTCOME_UNKNOWN:
            continue
        if record.outcome_deadline_at is not None and record.outcome_deadline_at <= now():
            failed = fail_job(
                rt,
                job_id,
                unknown_outcome_error(
                    "its answer was lost", waited_s=rt.settings.outcome_unknown_wait_s
                ),
                via=lifecycle.EXPIRE_UNKNOWN_OUTCOME,
            )
            if failed is not None:
                report.unknown_expired.append(job_id)
        elif record.callback_task_id and _touch(rt, job_id, JobState.OUTCOME_UNKNOWN):
            send(Adopt(job_id, record.callback_task_id, source="callback"))
            report.readopted.append(job_id)


#: This process's place in its scan of today's credit holds (a few hundred per pass).
_hold_scan = {"cursor": 0}


def _release_stray_holds(rt: Runtime, report: ReconcileReport, *, older_than_s: float) -> None:
    """Free today's credit holds that no job will use: a producer that died between
    holding and writing the record, or a job that ended while its hold's release was lost.
    A failed ``outcome_unknown`` job keeps its hold (it may have been charged)."""
    ledger = rt.credits()
    cursor, old = ledger.old_holds(older_than_s=older_than_s, cursor=_hold_scan["cursor"])
    _hold_scan["cursor"] = cursor
    for job_id, producer in old:
        record = rt.store.get(job_id)
        if record is not None and (
            not record.is_terminal
            or (record.error is not None and record.error.code == "outcome_unknown")
        ):
            continue  # still to be created, or possibly charged: it keeps its hold
        ledger.release(job_id, producer=producer, held_on=day_of())
        report.holds_released.append(job_id)
        log.warning(
            "credit_hold_released",
            job_id=job_id,
            why="job never recorded" if record is None else f"job {record.state.value}",
        )


def _waiting_messages(rt: Runtime) -> dict[str, int]:
    """Messages waiting per stage queue; empty (re-drive as usual) when unknown."""
    if broker_kind(rt.settings.broker_url) == "amqp":
        try:
            return amqp_queue_lengths(rt.settings.broker_url, ALL_QUEUES)
        except (OSError, KombuError, AMQPError) as exc:
            log.warning("reconcile_queue_lengths_unknown", error=type(exc).__name__)
            return {}
    broker = rt.broker()
    if broker is None:
        return {}
    try:
        return queue_lengths(broker, ALL_QUEUES)
    except redis.RedisError as exc:
        log.warning("reconcile_queue_lengths_unknown", error=type(exc).__name__)
        return {}


def _read(rt: Runtime, job_id: str) -> JobRecord | None:
    """The job's record; a vanished one (expired or evicted) is dropped from the indexes,
    where it would otherwise sit at the head of every scan (and count as in flight)."""
    record = rt.store.get(job_id)
    if record is None:
        rt.store.forget(job_id)
    return record


def _touch(rt: Runtime, job_id: str, state: JobState) -> str | None:
    """Claim a re-drive: bump ``updated_at`` only if nobody else did since we looked.

    Returns the job's Evolink task id (``""`` when it has none) if claimed, else ``None``.
    """
    record = _read(rt, job_id)
    if record is None:
        return None
    _, applied = rt.store.apply(
        lifecycle.REDRIVE.only_from(state), job_id, expect={"updated_at": record.updated_at}
    )
    return (record.evolink_task_id or "") if applied else None
