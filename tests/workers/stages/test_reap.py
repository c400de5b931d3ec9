"""The lease pass: a dead worker's mid-create jobs and lost deliveries move at once.

A worker is dead when its lease (renewed every third of ``NBQ_WORKER_LEASE_S``) lapsed;
one the registry does not know is never dead. Its ``submitting`` jobs are recovered with
their create's outcome unknown (never resent), and the broker's ``unacked`` deliveries no
live worker holds are put back on their queues.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kombu.connection import Connection

from nanobanana_queue.workers import leases
from nanobanana_queue.workers.app import celery_config, create_app
from nanobanana_queue.workers.contract import QUEUE_POLL, TASK_POLL
from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.stages import submit as submit_stage
from nanobanana_queue.workers.stages.common import now
from nanobanana_queue.workers.stages.reconcile import reap_dead_workers, recover_lost_submit
from tests.support.emulator_server import EmulatorServer
from tests.workers.stages.conftest import (
    StepLog,
    age,
    claim_submit,
    new_job,
    set_fields,
    submitted_job,
)


def registry(rt: Runtime) -> leases.WorkerLeases:
    return leases.WorkerLeases(
        rt.redis, prefix=rt.settings.key_prefix, lease_s=rt.settings.worker_lease_s
    )


def lapse(rt: Runtime, hostname: str) -> None:
    """The worker's last renewal is two leases old (a test's clock jump)."""
    last = registry(rt).server_now() - 2 * rt.settings.worker_lease_s
    rt.redis.zadd(registry(rt).key, {hostname: last})


@pytest.fixture
def as_worker() -> Iterator[None]:
    leases.set_current_worker("w-test@host")
    yield
    leases.set_current_worker(None)


@pytest.mark.usefixtures("as_worker")
def test_a_submit_claim_records_the_worker_that_made_it(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    job_id = new_job(rt)
    assert steps(submit_stage.submit(rt, job_id)) == "created"
    assert rt.store.require(job_id).claimed_by == "w-test@host"


def _claimed_and_sent_by(rt: Runtime, worker: str) -> str:
    """A job whose submit ``worker`` (leased) claimed and whose create it sent."""
    job_id = new_job(rt)
    claimed = claim_submit(rt, job_id)
    set_fields(rt, job_id, claimed_by=worker)
    rt.api().create_task(GenerationRequest.model_validate(claimed.request))
    registry(rt).renew(worker)
    return job_id


def _fails_outcome_unknown_with_one_create(
    rt: Runtime, steps: StepLog, emulator: EmulatorServer, job_id: str
) -> None:
    assert steps(submit_stage.submit(rt, job_id)) == "failed_outcome_unknown"
    error = rt.store.require(job_id).error
    assert error is not None and "recovered after a lost submit" in error.message
    assert emulator.stats()["creates_accepted"] == 1


def test_a_dead_workers_mid_create_job_is_decided_at_once_and_never_resent(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # Given worker w1 claimed a job, sent its create, and died before the answer
    job_id = _claimed_and_sent_by(rt, "w1")
    # While its lease is fresh the job is left alone, however long the pass waits
    assert reap_dead_workers(rt, steps).recovered_submitting == []
    # When the lease lapses, one lease pass recovers exactly that job (no idle time, no
    # submit time limit waited for)
    lapse(rt, "w1")
    report = reap_dead_workers(rt, steps)
    assert report.recovered_submitting == [job_id] and report.dead_workers == ["w1"]
    # Then its outcome is unknown: failed saying so, never created a second time
    _fails_outcome_unknown_with_one_create(rt, steps, emulator_server, job_id)
    # And the dead worker is forgotten: the next pass has nothing to do
    assert reap_dead_workers(rt, steps).total == 0


def test_a_submit_whose_pool_process_was_lost_is_decided_by_its_live_worker_at_once(
    rt: Runtime, steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # Given worker w1's pool process claimed a job, sent its create and was killed alone
    # (w1 itself alive and leased: the lease pass will never recover the claim)
    job_id = _claimed_and_sent_by(rt, "w1")
    # When another worker's main process reports it, nothing happens to w1's claim
    assert recover_lost_submit(rt, steps, job_id, worker="w2") == "moved_on"
    # When w1's main process reports it, the claim is recovered then
    assert recover_lost_submit(rt, steps, job_id, worker="w1") == "recovered"
    # Then its outcome is unknown: failed saying so, never created a second time
    _fails_outcome_unknown_with_one_create(rt, steps, emulator_server, job_id)
    # And a second report (the claim moved on) changes nothing
    assert recover_lost_submit(rt, steps, job_id, worker="w1") == "moved_on"


def test_a_submit_lost_before_its_claim_is_sent_again(rt: Runtime, steps: StepLog) -> None:
    # Given a pool process killed before it claimed the job (its message was acked)
    job_id = new_job(rt)
    # Then the job's submit is sent again (the claim makes a duplicate harmless)
    assert recover_lost_submit(rt, steps, job_id, worker="w1") == "resubmitted"
    assert [type(step).__name__ for step in steps.steps] == ["Submit"]


def test_after_a_death_a_poll_overdue_by_a_lease_is_re_driven_whoever_claimed_it(
    make_rt: Callable[..., Runtime], steps: StepLog, emulator_server: EmulatorServer
) -> None:
    # (kombu pops a message (BRPOP) before it records it in ``unacked``: a worker killed
    # in between loses it from both, and no lease covers it)
    rt = make_rt(worker_lease_s=0.3, stuck_after_s=3600)
    # Given a generating job whose poll, due long ago, never came (its message lost)
    record = submitted_job(rt, steps)
    set_fields(rt, record.job_id, next_poll_at=now() - 60)
    age(0.4)
    # While no worker was lost, the lease pass leaves it to the idle rule
    assert reap_dead_workers(rt, steps).repolled == []
    # When a worker (not the one that claimed it) is found dead
    registry(rt).renew("w9")
    lapse(rt, "w9")
    # Then the overdue poll is re-driven then, not NBQ_STUCK_AFTER_S later
    assert reap_dead_workers(rt, steps).repolled == [record.job_id]


def test_a_worker_the_registry_does_not_know_is_never_taken_for_dead(
    rt: Runtime, steps: StepLog
) -> None:
    job_id = new_job(rt)
    claim_submit(rt, job_id)
    set_fields(rt, job_id, claimed_by="never-leased")
    lapse(rt, "someone-else")
    assert reap_dead_workers(rt, steps).recovered_submitting == []
    assert rt.store.require(job_id).state is JobState.SUBMITTING


def test_leases_off_leave_recovery_to_the_time_limit(
    make_rt: Callable[..., Runtime], steps: StepLog
) -> None:
    rt = make_rt(worker_lease_s=0)
    job_id = new_job(rt)
    claim_submit(rt, job_id)
    set_fields(rt, job_id, claimed_by="w1")
    rt.redis.zadd(f"{rt.settings.key_prefix}:workers", {"w1": 0})
    assert reap_dead_workers(rt, steps).recovered_submitting == []


def _held_delivery(rt: Runtime, job_id: str, *, delivered_ago_s: float) -> str:
    """A poll message delivered to a consumer that then vanished without acking it (its
    connection broke, or its process was killed): it sits in kombu's ``unacked``."""
    create_app(rt.settings).send_task(
        TASK_POLL, kwargs={"job_id": job_id, "token": "t"}, queue=QUEUE_POLL
    )
    options = celery_config(rt.settings)["broker_transport_options"]
    conn = Connection(rt.settings.broker_url, transport_options=options)
    channel = conn.default_channel
    message = channel.basic_get(queue=QUEUE_POLL, no_ack=False)
    assert message is not None
    tag = str(message.delivery_tag)
    channel.qos._delivered.clear()  # lost with the process: nothing restores it on close
    conn.release()
    rt.redis.zadd("unacked_index", {tag: registry(rt).server_now() - delivered_ago_s})
    return tag


def test_deliveries_no_live_worker_holds_go_back_to_their_queue(
    rt: Runtime, steps: StepLog
) -> None:
    lease_s = rt.settings.worker_lease_s
    orphan = _held_delivery(rt, "j-orphan", delivered_ago_s=2 * lease_s)
    held = _held_delivery(rt, "j-held", delivered_ago_s=2 * lease_s)
    fresh = _held_delivery(rt, "j-fresh", delivered_ago_s=0)
    registry(rt).renew("w-live")
    registry(rt).publish_held("w-live", [held])
    # Between full passes the sweep waits to be asked (a worker died or reconnected)
    assert reap_dead_workers(rt, steps).restored_deliveries == 0
    registry(rt).ask_sweep()

    report = reap_dead_workers(rt, steps)

    assert report.restored_deliveries == 1
    unacked = {t.decode() if isinstance(t, bytes) else t for t in rt.redis.hkeys("unacked")}
    assert orphan not in unacked and {held, fresh} <= unacked
    assert rt.redis.llen(QUEUE_POLL) == 1
