"""The job store on a real redis-server: create once, checked updates, the per-state
indexes and state counter kept by the same write, retention, and retried runs that apply
once. Every test runs on the classic layout and on the sharded (Redis Cluster) layout."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs import store as store_module
from nanobanana_queue.workers.jobs.lifecycle import IllegalTransitionError
from nanobanana_queue.workers.jobs.record import JobError, JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.jobs.store import JobStore
from tests.support.records import seed
from tests.support.redis_server import RedisServer

RETENTION_S = 1000
ERROR = JobError(code="x", message="y")
#: What ``nbq retry`` writes (workers/stages/manual.py).
RETRY: dict[str, Any] = {
    "previous_task_ids": [],
    "create_seq": 2,
    "waiting_reason": "retry requested",
}
#: What a create's answer writes (workers/stages/submit.py).
TASK: dict[str, Any] = {"evolink_task_id": "task-1", "poll_token": "p1"}


@pytest.fixture(params=[0, 4], ids=["one-redis", "sharded"])
def store(request: pytest.FixtureRequest, session_redis: RedisServer) -> JobStore:
    """A store on its own key prefix of the session's redis-server."""
    return JobStore(
        session_redis.client(),
        prefix=f"t{uuid.uuid4().hex[:8]}",
        retention_s=RETENTION_S,
        shards=request.param,
    )


def _new_id() -> str:
    return uuid.uuid4().hex


def _indexed_in(store: JobStore, job_id: str) -> dict[JobState, float]:
    """The indexes holding ``job_id``, with its score."""
    found: dict[JobState, float] = {}
    for state in JobState:
        score = store.redis.zscore(store.index_key(state, job_id), job_id)
        if score is not None:
            found[state] = float(score)
    return found


def _entries(store: JobStore, job_id: str, state: JobState) -> int:
    raw = store.redis.hget(store.counter_key(job_id), f'["{state.value}"]')
    return int(raw) if raw is not None else 0


def _freeze_clock(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    """The store's stamp is its clock: a frozen clock makes the next call a retry."""
    monkeypatch.setattr(store_module, "time", SimpleNamespace(time=lambda: now))


# -- create ------------------------------------------------------------------------------


def test_create_stores_a_new_record_indexes_it_counts_it_and_sets_no_ttl_while_active(
    store: JobStore,
) -> None:
    job_id = _new_id()
    stamped, created = store.create(JobRecord(job_id=job_id, request={"prompt": "a cat"}))
    assert created
    assert stamped.updated_at > 0 and stamped.created_at == stamped.updated_at
    assert store.get(job_id) == stamped
    assert _indexed_in(store, job_id) == {JobState.QUEUED: stamped.updated_at}
    assert _entries(store, job_id, JobState.QUEUED) == 1
    # an active job's record never expires: its retention counts from its end
    assert store.redis.ttl(store.key(job_id)) == -1


def test_a_record_created_ended_expires_after_the_retention(store: JobStore) -> None:
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id, state=JobState.FAILED, error=ERROR))
    assert RETENTION_S - 5 <= store.redis.ttl(store.key(job_id)) <= RETENTION_S


def test_the_retention_counts_from_the_jobs_end_not_from_its_last_write(
    store: JobStore,
) -> None:
    # Given an active job moved along its life (every write on an active record)
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    store.apply(lifecycle.CLAIM_SUBMIT, job_id)
    store.apply(lifecycle.TASK_CREATED, job_id, **TASK)
    store.apply(lifecycle.POLL_LATER, job_id, next_poll_at=1.0)
    # Then it has no TTL: a long quota pause cannot expire a job in flight
    assert store.redis.ttl(store.key(job_id)) == -1
    # When it ends, the retention starts
    store.apply(lifecycle.FAIL, job_id, error=ERROR)
    assert RETENTION_S - 5 <= store.redis.ttl(store.key(job_id)) <= RETENTION_S
    # And a person putting it back to work removes the TTL again
    store.apply(lifecycle.MANUAL_RETRY, job_id, **RETRY)
    assert store.redis.ttl(store.key(job_id)) == -1


def test_create_with_an_existing_id_returns_the_existing_record_and_changes_nothing(
    store: JobStore,
) -> None:
    job_id = _new_id()
    first, _ = store.create(JobRecord(job_id=job_id, request={"prompt": "first"}))
    again, created = store.create(JobRecord(job_id=job_id, request={"prompt": "second"}))
    assert not created
    assert again == first and again.request == {"prompt": "first"}
    assert store.get(job_id) == first
    assert _entries(store, job_id, JobState.QUEUED) == 1
    assert _indexed_in(store, job_id) == {JobState.QUEUED: first.updated_at}


def test_a_create_retried_with_its_own_stamp_reports_created_once(store: JobStore) -> None:
    # The first run's reply was lost (a failover): the same call runs again.
    job_id = _new_id()
    stamped, args = store.create_command(JobRecord(job_id=job_id))
    keys = store.create_keys(stamped)
    assert store._create(keys=keys, args=args) == [1]
    assert store._create(keys=keys, args=args) == [1]
    assert _entries(store, job_id, JobState.QUEUED) == 1


def test_a_record_created_in_a_terminal_state_is_in_no_index_but_is_counted(
    store: JobStore,
) -> None:
    job_id = _new_id()
    record = JobRecord(job_id=job_id, state=JobState.FAILED, error=ERROR)
    stamped, created = store.create(record)
    assert created and store.require(job_id).error == stamped.error
    assert _indexed_in(store, job_id) == {}
    assert _entries(store, job_id, JobState.FAILED) == 1


def test_create_eval_args_create_the_same_record_in_a_pipeline_another_library_runs(
    store: JobStore,
) -> None:
    job_id = _new_id()
    stamped, command = store.create_eval_args(JobRecord(job_id=job_id, batch_id="b1"))
    pipe = store.redis.pipeline(transaction=False)
    pipe.execute_command(*command)
    assert pipe.execute() == [[1]]
    assert store.get(job_id) == stamped
    assert _indexed_in(store, job_id) == {JobState.QUEUED: stamped.updated_at}


# -- apply -------------------------------------------------------------------------------


def test_a_transition_moves_the_job_between_indexes_counts_the_entry_and_stamps_it(
    store: JobStore,
) -> None:
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    record, applied = store.apply(lifecycle.CLAIM_SUBMIT, job_id)  # attempts + 1
    assert applied and record is not None
    assert record.state is JobState.SUBMITTING and record.attempts == 1
    assert record.state_times[JobState.SUBMITTING.value] == record.updated_at
    assert _indexed_in(store, job_id) == {JobState.SUBMITTING: record.updated_at}
    assert _entries(store, job_id, JobState.SUBMITTING) == 1


def test_a_transition_from_another_state_is_refused_and_changes_nothing(
    store: JobStore,
) -> None:
    job_id = _new_id()
    created, _ = store.create(JobRecord(job_id=job_id))
    record, applied = store.apply(lifecycle.STORED, job_id, objects=[])
    assert not applied and record == created  # the current record, unchanged
    assert _indexed_in(store, job_id) == {JobState.QUEUED: created.updated_at}
    assert _entries(store, job_id, JobState.STORED) == 0


def test_only_from_narrows_the_states_a_transition_may_start_from(store: JobStore) -> None:
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    _, applied = store.apply(lifecycle.FAIL.only_from(JobState.SUBMITTING), job_id, error=ERROR)
    assert not applied
    _, applied = store.apply(lifecycle.FAIL.only_from(JobState.QUEUED), job_id, error=ERROR)
    assert applied and store.require(job_id).state is JobState.FAILED


def test_expect_lets_only_the_holder_of_the_exact_value_write(store: JobStore) -> None:
    job_id = _new_id()
    seed(store, JobRecord(job_id=job_id, state=JobState.GENERATING, poll_token="t1"))
    by_token = lifecycle.POLL_COUNTED
    _, applied = store.apply(by_token, job_id, expect={"poll_token": "t0"})
    assert not applied and store.require(job_id).polls == 0
    _, applied = store.apply(by_token, job_id, expect={"poll_token": None})
    assert not applied  # None means the field must be absent
    record, applied = store.apply(by_token, job_id, expect={"poll_token": "t1"})
    assert applied and record is not None and record.polls == 1
    queued = _new_id()
    store.create(JobRecord(job_id=queued))
    by_task = lifecycle.NOTE_EARLY_CALLBACK
    _, applied = store.apply(
        by_task, queued, expect={"evolink_task_id": None}, callback_task_id="task-cb"
    )
    assert applied


def test_a_float_guard_matches_the_value_as_the_store_wrote_it(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reconciler claims a re-drive on the exact updated_at it read back as a float.
    job_id = _new_id()
    _freeze_clock(monkeypatch, 2_000_000_003.123457)
    store.create(JobRecord(job_id=job_id))
    stamp = store.require(job_id).updated_at
    touch = lifecycle.REDRIVE
    _freeze_clock(monkeypatch, 2_000_000_004.7)
    record, applied = store.apply(touch, job_id, expect={"updated_at": stamp})
    assert applied and record is not None and record.updated_at == 2_000_000_004.7
    _freeze_clock(monkeypatch, 2_000_000_005.9)
    _, applied = store.apply(touch, job_id, expect={"updated_at": stamp})
    assert not applied  # somebody (here: we) touched it since: the old stamp loses


def test_a_worker_holding_its_metric_events_counts_each_move_once_itself(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NBQ_METRICS_FLUSH_S > 0: the move's entry goes with the process's held events
    counted: list[str] = []
    store.state_counts = counted.append
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    assert store.apply(lifecycle.NOTE_WAITING, job_id, waiting_reason="x")[1]  # no move
    _freeze_clock(monkeypatch, 2_000_000_010.5)
    assert store.apply(lifecycle.CLAIM_SUBMIT, job_id)[1]
    # The reply was lost and the same call runs again: it finds its own (uncounted) move
    assert store.apply(lifecycle.CLAIM_SUBMIT, job_id)[1]
    _freeze_clock(monkeypatch, 2_000_000_011.5)
    assert not store.apply(lifecycle.CLAIM_SUBMIT, job_id)[1]  # a duplicate loses
    assert _entries(store, job_id, JobState.SUBMITTING) == 0  # not by the script
    assert counted == ["submitting", "submitting"]


def test_the_guards_given_must_be_exactly_the_transitions(store: JobStore) -> None:
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    with pytest.raises(IllegalTransitionError, match="guarded by"):
        store.apply(lifecycle.CLAIM_POLL, job_id, poll_token="t")  # no expect
    with pytest.raises(IllegalTransitionError, match="guarded by"):
        store.apply(lifecycle.CLAIM_SUBMIT, job_id, expect={"poll_token": None})
    with pytest.raises(IllegalTransitionError, match="cannot set"):
        store.apply(lifecycle.CANCEL, job_id, poll_token="t")  # a field the move unsets


def test_unset_removes_fields_and_incr_adds_to_them_in_the_same_write(store: JobStore) -> None:
    job_id = _new_id()
    seed(
        store,
        JobRecord(
            job_id=job_id, state=JobState.SUBMITTING, waiting_reason="quota", credits_paid=1.5
        ),
    )
    record, applied = store.apply(
        lifecycle.TASK_CREATED, job_id, incr={"credits_paid": 2.25}, **TASK
    )
    assert applied and record is not None
    assert record.waiting_reason is None and "waiting_reason" not in store.redis.hkeys(
        store.key(job_id)
    )
    assert record.credits_paid == 3.75 and record.paid_creates == 1


def test_a_note_is_limited_to_its_states_and_does_not_count_an_entry(
    store: JobStore,
) -> None:
    job_id = _new_id()
    created, _ = store.create(JobRecord(job_id=job_id))
    _, applied = store.apply(lifecycle.POLL_LATER, job_id, next_poll_at=1.0)
    assert not applied
    record, applied = store.apply(lifecycle.NOTE_WAITING, job_id, waiting_reason="quota")
    assert applied and record is not None and record.state is JobState.QUEUED
    assert record.updated_at >= created.updated_at
    # the index score follows the last update (the reconciler finds idle jobs by it)
    assert _indexed_in(store, job_id) == {JobState.QUEUED: record.updated_at}
    assert _entries(store, job_id, JobState.QUEUED) == 1


def test_a_job_walked_to_a_terminal_state_leaves_every_index_and_keeps_its_retention(
    store: JobStore,
) -> None:
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    assert store.apply(lifecycle.CLAIM_SUBMIT, job_id)[1]
    assert store.apply(lifecycle.TASK_CREATED, job_id, **TASK)[1]
    assert store.apply(lifecycle.COMPLETED, job_id, expect={"poll_token": "p1"}, result_urls=[])[1]
    store.redis.expire(store.key(job_id), 5)  # the ending write sets the retention
    record, applied = store.apply(lifecycle.STORED, job_id, objects=[])
    assert applied and record is not None and record.state is JobState.STORED
    assert _indexed_in(store, job_id) == {}
    assert RETENTION_S - 5 <= store.redis.ttl(store.key(job_id)) <= RETENTION_S
    assert set(record.state_times) == {
        "queued",
        "submitting",
        "generating",
        "downloading",
        "stored",
    }
    for state in (JobState.QUEUED, JobState.STORED):
        assert _entries(store, job_id, state) == 1


def test_a_failed_job_retried_by_a_person_is_indexed_again(store: JobStore) -> None:
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    store.apply(lifecycle.FAIL, job_id, error=ERROR)
    record, applied = store.apply(lifecycle.MANUAL_RETRY, job_id, **RETRY)
    assert applied and record is not None
    assert _indexed_in(store, job_id) == {JobState.QUEUED: record.updated_at}
    assert _entries(store, job_id, JobState.QUEUED) == 2


def test_a_missing_job_is_reported_as_none_and_nothing_is_written(store: JobStore) -> None:
    job_id = _new_id()
    assert store.apply(lifecycle.CLAIM_SUBMIT, job_id) == (None, False)
    assert store.apply(lifecycle.POLL_LATER, job_id, next_poll_at=1.0) == (None, False)
    assert not store.redis.exists(store.key(job_id))
    assert _indexed_in(store, job_id) == {}
    assert _entries(store, job_id, JobState.SUBMITTING) == 0


def test_forget_drops_a_vanished_records_index_entries(store: JobStore) -> None:
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    store.redis.delete(store.key(job_id))  # expired or evicted
    store.forget(job_id)
    assert _indexed_in(store, job_id) == {}


# -- retried runs (the first reply lost in a failover) -----------------------------------


def test_a_retried_transition_reports_applied_without_applying_twice(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    _freeze_clock(monkeypatch, 2_000_000_000.25)
    first, applied = store.apply(lifecycle.CLAIM_SUBMIT, job_id)
    assert applied and first is not None and first.attempts == 1
    again, applied = store.apply(lifecycle.CLAIM_SUBMIT, job_id)
    assert applied and again == first
    assert _entries(store, job_id, JobState.SUBMITTING) == 1


def test_a_retried_field_update_reports_applied_without_applying_twice(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _new_id()
    seed(store, JobRecord(job_id=job_id, state=JobState.GENERATING, poll_token="p"))
    _freeze_clock(monkeypatch, 2_000_000_000.5)
    assert store.apply(lifecycle.POLL_COUNTED, job_id, expect={"poll_token": "p"})[1]
    record, applied = store.apply(lifecycle.POLL_COUNTED, job_id, expect={"poll_token": "p"})
    assert applied and record is not None and record.polls == 1


def test_a_later_call_is_not_mistaken_for_a_retry(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _new_id()
    seed(store, JobRecord(job_id=job_id, state=JobState.GENERATING, poll_token="p"))
    _freeze_clock(monkeypatch, 2_000_000_001.0)
    assert store.apply(lifecycle.POLL_COUNTED, job_id, expect={"poll_token": "p"})[1]
    _freeze_clock(monkeypatch, 2_000_000_002.0)
    record, applied = store.apply(lifecycle.POLL_COUNTED, job_id, expect={"poll_token": "p"})
    assert applied and record is not None and record.polls == 2


# -- durable writes (WAIT in the same round trip, EVAL with the script text) -------------


def test_durable_writes_run_the_same_scripts_and_warn_when_no_replica_acknowledges(
    store: JobStore,
) -> None:
    durable = JobStore(
        store.redis,
        prefix=store.prefix,
        retention_s=RETENTION_S,
        shards=store.shards,
        wait_replicas=1,
        wait_timeout_ms=1,
    )
    job_id = _new_id()
    with capture_logs() as logs:
        stamped, created = durable.create(JobRecord(job_id=job_id))
        durable.apply(lifecycle.CLAIM_SUBMIT, job_id)  # not durable: no WAIT
        record, applied = durable.apply(lifecycle.TASK_CREATED, job_id, durable=True, **TASK)
        again, created_again = durable.create(JobRecord(job_id=job_id))
    assert created and applied and not created_again
    assert record is not None and record.evolink_task_id == "task-1" and again == record
    assert _indexed_in(store, job_id) == {JobState.GENERATING: record.updated_at}
    assert [e["event"] for e in logs] == ["store_write_not_replicated"] * 3
    assert store.require(job_id).created_at == stamped.created_at


def test_the_store_works_with_a_client_that_decodes_replies(session_redis: RedisServer) -> None:
    client = redis.Redis.from_url(session_redis.url, decode_responses=True)
    store = JobStore(client, prefix=f"t{uuid.uuid4().hex[:8]}")
    job_id = _new_id()
    assert store.create(JobRecord(job_id=job_id))[1]
    record, applied = store.apply(lifecycle.CLAIM_SUBMIT, job_id)
    assert applied and record is not None and record.state is JobState.SUBMITTING


def test_a_write_through_an_outage_is_retried_and_a_lost_answer_shows_the_callers_fields(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job being submitted, and a store whose first answer is lost after the write
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    store.apply(lifecycle.CLAIM_SUBMIT, job_id)
    real = store._write
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        if len(calls) == 1:
            raise redis.ConnectionError("answer lost in a failover")
        return result

    monkeypatch.setattr(store, "_write", flaky)
    # When the task id is recorded through the outage
    record, applied = store.apply(
        lifecycle.TASK_CREATED,
        job_id,
        outage_patience_s=5.0,
        evolink_task_id="task-1",
        poll_token="tok",
    )
    # Then it was retried once: the retry lost (already applied), the record is the caller's
    assert len(calls) == 2 and applied is False
    assert record is not None and record.state is JobState.GENERATING
    assert (record.evolink_task_id, record.poll_token) == ("task-1", "tok")


def test_a_write_through_an_outage_gives_up_after_its_patience(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def away(*args: object, **kwargs: object) -> object:
        raise redis.ConnectionError("still away")

    monkeypatch.setattr(store, "_write", away)
    with pytest.raises(redis.ConnectionError):
        store.apply(lifecycle.TASK_CREATED, "j", outage_patience_s=0.5, **TASK)


def test_a_write_without_patience_is_not_retried(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def away(*args: object, **kwargs: object) -> object:
        calls.append(1)
        raise redis.ConnectionError("away")

    monkeypatch.setattr(store, "_write", away)
    with pytest.raises(redis.ConnectionError):
        store.apply(lifecycle.TASK_CREATED, "j", **TASK)
    assert calls == [1]


def test_one_create_in_sixteen_trims_its_producers_index_past_the_retention(
    store: JobStore,
) -> None:
    records = [JobRecord(job_id=f"job-{n}", producer="p", created_at=5000.0) for n in range(320)]
    trims = [r for r in records if len(store.producer_index_commands(r)) == 2]
    assert 0 < len(trims) < len(records) // 4  # ≈ 1 in PRODUCER_INDEX_TRIM_EVERY (16)
    assert store.producer_index_commands(trims[0])[1] == [
        "ZREMRANGEBYSCORE",
        store.producer_index_key("p"),
        "-inf",
        f"({5000.0 - RETENTION_S!r}",
    ]
    assert store.producer_index_commands(JobRecord(job_id=_new_id())) == []  # no producer


def test_a_store_with_an_end_channel_publishes_each_applied_end_in_its_write(
    store: JobStore,
) -> None:
    """``end_channel_prefix`` (a worker's store): the write that ends a job publishes its
    state on <prefix>:jobend:<id>; a write refused or that ends nothing publishes nothing."""
    store.end_channel_prefix = store.prefix
    job_id = _new_id()
    store.create(JobRecord(job_id=job_id))
    pubsub = store.redis.pubsub()
    pubsub.subscribe(f"{store.prefix}:jobend:{job_id}")
    assert pubsub.get_message(timeout=1.0) is not None  # the subscribe confirmation
    assert not store.apply(lifecycle.STORED, job_id, objects=[])[1]  # refused: queued
    assert store.apply(lifecycle.CLAIM_SUBMIT, job_id)[1]  # no end
    assert store.apply(lifecycle.FAIL, job_id, error=ERROR)[1]
    assert not store.apply(lifecycle.FAIL, job_id, error=ERROR)[1]  # ended already
    got = []
    while (message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)) is not None:
        got.append(message["data"])
    assert got == [b"failed"]
    pubsub.close()
