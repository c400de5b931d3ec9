"""The reconciler re-drives stalled jobs and never causes a second paid create."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.notify.events import webhook_id
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages import poll as poll_stage
from nanobanana_queue.workers.stages import reconcile as reconcile_stage
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.common import now
from nanobanana_queue.workers.stages.reconcile import BACKLOG_HOLD_FACTOR, reconcile_once
from nanobanana_queue.workers.stages.steps import Message, Notify, Send
from tests.support.emulator_server import EmulatorServer
from tests.support.records import seed
from tests.workers.stages.conftest import (
    FAST_REDOWNLOAD,
    StepLog,
    age,
    claim_submit,
    new_job,
    set_fields,
    submitted_job,
)


@pytest.mark.usefixtures("short_submit_claims")
def test_a_job_stuck_in_submitting_is_requeued_outcome_unknown_and_resent_under_its_key(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # Given an operator who trusts Idempotency-Key, against a server that honours it
    rt = make_rt(idempotent_creates=True)
    emulator_server.set_idempotency(True)
    # Given a worker died mid-create: the job is submitting, its create reached the API
    job_id = new_job(rt)
    claimed = claim_submit(rt, job_id)
    rt.api().create_task(
        GenerationRequest.model_validate(claimed.request),
        idempotency_key=submit_stage.idempotency_key(claimed),
    )
    age()
    # When the reconciler runs
    report = reconcile_once(rt, steps)
    # Then the job is queued again, flagged outcome-unknown, and a submit is scheduled
    assert report.recovered_submitting == [job_id]
    record = rt.store.require(job_id)
    assert record.state is JobState.QUEUED and record.create_outcome_unknown is True
    assert steps.calls == [("submit", job_id)]
    # And the resent create (same Idempotency-Key) gets the first task back, unpaid
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    stats = emulator_server.stats()
    assert stats["creates_accepted"] == 1 and stats["idempotent_repeats"] == 1
    assert rt.store.require(job_id).create_outcome_unknown is False


def test_a_generating_job_with_no_poll_due_gets_a_new_chain_and_the_old_one_stops(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    record = submitted_job(rt, steps)
    _, job_id, old_token = steps.last("poll")
    # Given its poll message was lost: no poll due since long ago
    set_fields(rt, job_id, next_poll_at=now() - 60)
    age()
    report = reconcile_once(rt, steps)
    assert report.repolled == [job_id]
    _, _, new_token = steps.last("poll")
    assert new_token != old_token == record.poll_token
    # The lost message, if it ever comes back, is stale; the new chain runs
    assert steps(poll_stage.poll(rt, job_id, old_token)) == "stale_token"
    assert steps(poll_stage.poll(rt, job_id, new_token)) in {"rescheduled", "completed"}
    assert emulator_server.stats()["creates_accepted"] == 1


def test_a_poll_under_way_is_never_re_polled_however_late_its_message_came(
    rt: Runtime, steps: StepLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a generating job idle past the stuck time whose poll message came late
    submitted_job(rt, steps)
    _, job_id, token = steps.last("poll")
    set_fields(rt, job_id, next_poll_at=now() - 60)
    age()
    # When a reconcile pass runs while that poll's query is in flight
    passes = []
    api = rt.api()
    query = api.get_task

    def query_during_a_pass(task_id: str) -> Any:
        passes.append(reconcile_once(rt, steps))
        return query(task_id)

    monkeypatch.setattr(api, "get_task", query_during_a_pass)
    outcome = steps(poll_stage.poll(rt, job_id, token))
    # Then the pass leaves the job to the poll that claimed it, which goes on
    assert passes[0].repolled == []
    assert outcome in {"rescheduled", "completed"}


def test_reconciler_passes_never_create_twice_or_redrive_a_claimed_job_again(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # The generating job first: a submit slot creates the fairest waiting job, which
    # would be an older queued one (workers/resilience/fairshare.py)
    generating = submitted_job(rt, steps, "idle generating").job_id
    queued = new_job(rt, "idle queued")
    set_fields(rt, generating, next_poll_at=now() - 60)
    steps.calls.clear()
    age()
    # Two hosts' passes back to back: only the first re-drives each job
    first = reconcile_once(rt, steps)
    second = reconcile_once(rt, steps)
    assert first.requeued_submits == [queued] and first.repolled == [generating]
    assert second.total == 0
    # Re-driven submits run more than once: one create for the queued job, none for the other
    for call in [c for c in steps.calls if c[0] == "submit"] * 3:
        steps(submit_stage.submit(rt, call[1]))
    assert emulator_server.stats()["creates_accepted"] == 2
    assert rt.store.require(queued).attempts == 1


def test_a_job_stuck_downloading_is_downloaded_again(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    rt = make_rt(**FAST_REDOWNLOAD)
    job_id = seed(rt.store, JobRecord(job_id=uuid.uuid4().hex, state=JobState.DOWNLOADING)).job_id
    age()
    assert reconcile_once(rt, steps).redownloaded == [job_id]
    assert steps.calls == [("download", job_id)]
    assert reconcile_once(rt, steps).total == 0


def test_a_job_waiting_behind_a_long_submit_queue_is_held_not_resent(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # Given a queued job idle past the threshold while other submits still wait in the
    # broker's queue (a backlog, not a lost message)
    job_id = new_job(rt)
    age()
    broker = rt.broker()
    assert broker is not None
    broker.lpush("submit", "a message still waiting its turn")
    # Then the reconciler holds it (a resend would only lengthen that queue) ...
    report = reconcile_once(rt, steps)
    assert report.requeued_submits == [] and report.held_for_backlog == ["submit"]
    assert steps.calls == []
    # ... and resends it as soon as the queue is empty and the job is still queued
    broker.delete("submit")
    report = reconcile_once(rt, steps)
    assert report.requeued_submits == [job_id] and steps.calls == [("submit", job_id)]
    assert emulator_server.stats()["creates_accepted"] == 0


def test_a_queue_that_never_empties_only_delays_the_resend_of_a_lost_message(
    rt: Runtime, steps: StepLog
) -> None:
    job_id = new_job(rt)
    broker = rt.broker()
    assert broker is not None
    broker.lpush("submit", "steady traffic")
    age()
    assert reconcile_once(rt, steps).requeued_submits == []
    # Idle for BACKLOG_HOLD_FACTOR x NBQ_STUCK_AFTER_S (0.2 s in these tests): resent anyway.
    age(rt.settings.stuck_after_s * BACKLOG_HOLD_FACTOR)
    assert reconcile_once(rt, steps).requeued_submits == [job_id]


@pytest.mark.usefixtures("short_submit_claims")
def test_a_backlog_never_holds_jobs_whose_messages_are_not_in_a_queue(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # A lost poll chain (countdown polls sit in worker memory) and a submit that died
    # mid-create (its message was acked early) are recovered whatever the queues hold.
    record = submitted_job(rt, steps)
    set_fields(rt, record.job_id, next_poll_at=now() - 60)
    dying = new_job(rt)
    claim_submit(rt, dying)
    age()
    broker = rt.broker()
    assert broker is not None
    for queue in ("submit", "poll", "download"):
        broker.lpush(queue, "a message still waiting")
    report = reconcile_once(rt, steps)
    assert report.repolled == [record.job_id]
    assert report.recovered_submitting == [dying]
    assert report.held_for_backlog == ["download", "poll", "submit"]


def test_a_live_submit_younger_than_its_time_limit_is_never_re_driven(
    rt: Runtime, steps: StepLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a submit that claimed its job and is still inside its create (or recording its
    # task id through a store failover): idle past NBQ_STUCK_AFTER_S, not past the submit
    # task's hard time limit (90 s)
    job_id = new_job(rt)
    claim_submit(rt, job_id)
    age()
    assert reconcile_stage.submit_time_limit_s(rt.settings) == 90
    # When the reconciler runs
    report = reconcile_once(rt, steps)
    # Then the job is left to its submit: not requeued, not marked outcome-unknown
    assert report.recovered_submitting == [] and steps.calls == []
    record = rt.store.require(job_id)
    assert record.state is JobState.SUBMITTING
    assert record.create_outcome_unknown is False
    # And once the claim is older than a submit can live, the worker is known dead
    monkeypatch.setattr(reconcile_stage, "submit_time_limit_s", lambda _settings: 0.2)
    assert reconcile_once(rt, steps).recovered_submitting == [job_id]
    assert rt.store.require(job_id).create_outcome_unknown is True


def test_a_re_driven_message_is_sent_inside_the_trace_of_the_jobs_enqueue(
    make_rt: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_rt(**FAST_REDOWNLOAD)
    from nanobanana_queue.workers import tracing

    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    record = JobRecord(job_id=uuid.uuid4().hex, state=JobState.DOWNLOADING, traceparent=traceparent)
    seed(rt.store, record)
    age()
    monkeypatch.setattr(tracing, "_on", True)  # the API alone: the context, no exporter
    sent_in: list[str | None] = []
    assert reconcile_once(rt, lambda step: sent_in.append(tracing.current_traceparent()))
    assert [p and p.split("-")[1] for p in sent_in] == ["0af7651916cd43dd8448eb211c80319c"]


# -- the notify outbox: a job's end is told at least once, even across a crash ------------

NOTIFY_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _told_job(rt: Runtime, job_id: str) -> None:
    rt.store.create(JobRecord(job_id=job_id, producer="shop", notify_url="https://shop.example/h"))


def _crash(step: Message) -> None:
    raise ConnectionError("the process died before nbq.notify left")


def test_an_end_whose_notify_send_was_lost_is_told_by_one_reconcile_pass_with_its_id(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    # Given webhooks on, and a process that dies between the end write and its send
    rt = make_rt(notify_secrets=f"shop:{NOTIFY_SECRET}")
    sends: list[Send] = [_crash]
    on_done: list[tuple[object, ...]] = []
    rt.install_notify(lambda step: sends[0](step), lambda *a, **kw: on_done.append(a))
    _told_job(rt, "told-1")
    ended, won = rt.store.apply(lifecycle.CANCEL, "told-1")
    assert won and ended is not None
    # Then the end stays in the outbox
    assert rt.store.outbox_due(before=now() + 1) == [("told-1", repr(ended.updated_at))]
    # When a reconcile pass runs past the grace (with a send that works)
    sends[0] = steps
    age()
    report = reconcile_once(rt, steps)
    # Then the job.cancelled webhook is sent once, with the id its first send would have had
    assert report.notify_redelivered == ["told-1"]
    (notify,) = [s for s in steps.steps if isinstance(s, Notify)]
    assert (notify.job_id, notify.event) == ("told-1", "job.cancelled")
    assert notify.webhook_id == webhook_id("told-1", "job.cancelled", ended.updated_at)
    assert notify.payload["data"]["state"] == "cancelled"
    # and the outbox is empty: the next pass sends nothing again
    assert rt.store.outbox_due(before=now() + 1) == []
    assert reconcile_once(rt, steps).notify_redelivered == []


def test_a_normal_end_leaves_the_outbox_empty_and_an_untold_job_never_enters_it(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    rt = make_rt(notify_secrets=f"shop:{NOTIFY_SECRET}")
    rt.install_notify(steps, lambda *a, **kw: None)
    _told_job(rt, "told-2")
    rt.store.create(JobRecord(job_id="untold-2", producer="shop"))
    assert rt.store.apply(lifecycle.CANCEL, "told-2")[1]
    assert rt.store.apply(lifecycle.CANCEL, "untold-2")[1]
    assert [s.job_id for s in steps.steps if isinstance(s, Notify)] == ["told-2"]
    assert rt.store.outbox_due(before=now() + 1) == []
    age()
    assert reconcile_once(rt, steps).notify_redelivered == []
