"""A job's named transitions: each one agrees with the state table, the table has no move
no transition makes, every transition runs on a real store from each of its states and
writes exactly the fields it declares, the store runs no other transition and writes no
other field, a record is born only as a birth of the table says, the scripts refuse what
the table forbids, and docs/job-states.md shows the code's tables."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.lifecycle import ALL, IllegalTransitionError, Transition
from nanobanana_queue.workers.jobs.record import JobError, JobRecord, StoredObject
from nanobanana_queue.workers.jobs.state import TRANSITIONS, JobState
from nanobanana_queue.workers.jobs.store import CREATE_LUA, JobStore
from tests.support.records import seed
from tests.support.redis_server import RedisServer

DOC = Path(__file__).resolve().parents[3] / "docs" / "job-states.md"


@pytest.fixture
def store(session_redis: RedisServer) -> JobStore:
    return JobStore(session_redis.client(), prefix=f"l{uuid.uuid4().hex[:8]}")


def test_every_transition_of_the_code_is_a_move_the_state_table_allows() -> None:
    for t in ALL:
        if t.target is not None:
            assert all(t.target in TRANSITIONS[s] for s in t.sources), t.name


def test_every_move_of_the_state_table_is_made_by_some_named_transition() -> None:
    table = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    assert lifecycle.edges() == table


def test_a_recreate_goes_back_to_the_queue_as_the_table_says() -> None:
    # The table used to say generating → submitting while the poll stage moved the job
    # to queued; the table now says what the code does (a recreate is claimed afresh).
    assert JobState.QUEUED in TRANSITIONS[JobState.GENERATING]
    assert JobState.SUBMITTING not in TRANSITIONS[JobState.GENERATING]
    assert lifecycle.RECREATE.target is JobState.QUEUED


def test_a_transition_outside_the_table_cannot_even_be_defined() -> None:
    with pytest.raises(IllegalTransitionError, match="queued → downloading"):
        Transition("skip", frozenset({JobState.QUEUED}), JobState.DOWNLOADING)
    with pytest.raises(IllegalTransitionError, match="no source"):
        Transition("nowhere", frozenset(), JobState.FAILED)


def test_only_from_narrows_to_a_subset_and_refuses_anything_else() -> None:
    narrowed = lifecycle.FAIL.only_from(JobState.DOWNLOADING)
    assert narrowed.sources == {JobState.DOWNLOADING}
    assert (narrowed.target, narrowed.unsets) == (lifecycle.FAIL.target, lifecycle.FAIL.unsets)
    assert lifecycle.CANCEL.only_from(*lifecycle.CANCEL.sources) is lifecycle.CANCEL
    with pytest.raises(IllegalTransitionError, match="subset"):
        lifecycle.CLAIM_SUBMIT.only_from(JobState.GENERATING)


def _cases() -> list[tuple[Transition, JobState]]:
    return [(t, s) for t in ALL for s in sorted(t.sources)]


#: Unset/guard fields a test record can hold as the plain string "x".
_PLAIN = {"waiting_reason", "evolink_task_id", "poll_token", "callback_task_id"}

#: A value of each field a transition may take (of the record's type for it).
SAMPLES: dict[str, Any] = {
    "waiting_reason": "why",
    "evolink_task_id": "task-new",
    "poll_token": "token-new",
    "estimated_time_s": 12.5,
    "deadline_at": 2e9,
    "next_poll_at": 2e9,
    "progress": 40,
    "previous_task_ids": ["task-old"],
    "create_seq": 2,
    "error": JobError(code="c", message="m"),
    "result_urls": ["https://results.example/1.png"],
    "objects": [StoredObject(key="k", sha256="s", size=1, content_type="image/png")],
    "outcome_deadline_at": 2e9,
    "adopt_consent_task_id": "task-consent",
    "callback_task_id": "task-cb",
    "claimed_by": "worker-1",
    "first_create_at": 1e9,
    "credits_reserved": 1.5,
    "credits_held_on": "2026-12-07",
}


@pytest.mark.parametrize(
    ("transition", "source"), _cases(), ids=[f"{t.name}-{s.value}" for t, s in _cases()]
)
def test_each_transition_applies_from_each_of_its_states_writing_what_it_declares(
    store: JobStore, transition: Transition, source: JobState
) -> None:
    # Given a job in the source state holding every guard field and every unset field
    job_id = uuid.uuid4().hex
    held = {name: "x" for name in (*transition.guards, *transition.unsets)}
    fields = {k: v for k, v in held.items() if k in _PLAIN}
    created = seed(store, JobRecord(job_id=job_id, state=source, polls=1, **fields))
    expect: dict[str, str | float | None] = {
        g: (created.updated_at if g == "updated_at" else fields.get(g)) for g in transition.guards
    }
    # When the transition is applied with its guards, every field it takes and its counters
    taken = {name: SAMPLES[name] for name in transition.takes}
    incr = {name: 2 for name in transition.counts}
    record, applied = store.apply(transition, job_id, expect=expect, incr=incr, **taken)
    # Then the job is in the target state (a note keeps it) without the unset fields
    assert applied and record is not None
    assert record.state is (transition.target or source)
    raw = store.redis.hkeys(store.key(job_id))
    assert not {u.encode() for u in transition.unsets} & set(raw)
    # And it holds what the transition fixes, what it took, and its counters added to
    for name, value in [*transition.fixed, *taken.items()]:
        assert getattr(record, name) == value, name
    for name, amount in [*transition.bumps, *incr.items()]:
        assert getattr(record, name) == getattr(created, name) + amount, name


def test_a_guard_that_does_not_hold_refuses_the_transition(store: JobStore) -> None:
    job_id = uuid.uuid4().hex
    seed(store, JobRecord(job_id=job_id, state=JobState.GENERATING, poll_token="live"))
    _, applied = store.apply(
        lifecycle.COMPLETED, job_id, expect={"poll_token": "stale"}, result_urls=["u"]
    )
    assert not applied and store.require(job_id).state is JobState.GENERATING


def test_the_docs_transition_table_is_the_codes() -> None:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- transitions: generated from workers/jobs/lifecycle.py -->\n(.*?)\n"
        r"<!-- /transitions -->",
        text,
        re.S,
    )
    assert found is not None, "docs/job-states.md lost its transitions table"
    assert found.group(1).strip() == lifecycle.markdown(), (
        "docs/job-states.md's transitions table differs from workers/jobs/lifecycle.py; "
        "paste this:\n" + lifecycle.markdown()
    )


def test_the_docs_births_table_is_the_codes() -> None:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- births: generated from workers/jobs/lifecycle.py -->\n(.*?)\n<!-- /births -->",
        text,
        re.S,
    )
    assert found is not None, "docs/job-states.md lost its births table"
    assert found.group(1).strip() == lifecycle.births_markdown(), (
        "docs/job-states.md's births table differs from workers/jobs/lifecycle.py; "
        "paste this:\n" + lifecycle.births_markdown()
    )


def test_the_store_runs_only_the_tables_transitions(store: JobStore) -> None:
    job_id = store.create(JobRecord(job_id=uuid.uuid4().hex))[0].job_id
    # A transition of one's own, even one the state table allows, is refused
    own = Transition("my_claim", frozenset({JobState.QUEUED}), JobState.SUBMITTING)
    with pytest.raises(IllegalTransitionError, match="not a transition of"):
        store.apply(own, job_id)
    # and so is a table's name on a changed definition (more sources, other writes)
    widened = replace(lifecycle.NOTE_WAITING, sources=frozenset(JobState))
    with pytest.raises(IllegalTransitionError, match="not a transition of"):
        store.apply(widened, job_id, waiting_reason="w")
    loosened = replace(lifecycle.NOTE_WAITING, takes=("waiting_reason", "progress"))
    with pytest.raises(IllegalTransitionError, match="not a transition of"):
        store.apply(loosened, job_id, waiting_reason="w", progress=3)
    # while one narrowed with only_from is still the table's
    assert store.apply(lifecycle.FAIL.only_from(JobState.QUEUED), job_id, error=SAMPLES["error"])[1]


def test_a_transition_writes_only_what_it_takes_each_of_its_type(store: JobStore) -> None:
    job_id = store.create(JobRecord(job_id=uuid.uuid4().hex))[0].job_id
    with pytest.raises(IllegalTransitionError, match="cannot set"):
        store.apply(lifecycle.NOTE_WAITING, job_id, waiting_reason="w", progress=3)
    with pytest.raises(IllegalTransitionError, match="needs"):
        store.apply(lifecycle.NOTE_WAITING, job_id)
    with pytest.raises(IllegalTransitionError, match="waiting_reason=3"):
        store.apply(lifecycle.NOTE_WAITING, job_id, waiting_reason=3)
    # a value the transition fixes is not the caller's to choose
    with pytest.raises(IllegalTransitionError, match="cannot set"):
        store.apply(lifecycle.CANCEL, job_id, credits_reserved=2.0)
    # nor a counter it does not declare, nor one it bumps itself
    with pytest.raises(IllegalTransitionError, match="cannot add to"):
        store.apply(lifecycle.CLAIM_SUBMIT, job_id, incr={"attempts": 1})
    # and nothing was written
    assert store.require(job_id).state is JobState.QUEUED
    assert store.require(job_id).waiting_reason is None


def test_a_transitions_own_fields_are_checked_when_it_is_defined() -> None:
    with pytest.raises(IllegalTransitionError, match="not writable record fields"):
        Transition("odd", frozenset({JobState.QUEUED}), None, takes=("no_such_field",))
    with pytest.raises(IllegalTransitionError, match="not writable record fields"):
        Transition("odd", frozenset({JobState.QUEUED}), None, takes=("state",))
    with pytest.raises(IllegalTransitionError, match="progress='x'"):
        Transition("odd", frozenset({JobState.QUEUED}), None, fixed=(("progress", "x"),))
    with pytest.raises(IllegalTransitionError, match="declared twice"):
        Transition(
            "odd", frozenset({JobState.QUEUED}), None, takes=("polls",), bumps=(("polls", 1),)
        )


def test_sub_state_fields_are_written_only_by_their_owners() -> None:
    # create_outcome_unknown: only ever a transition's fixed value, never a caller's
    for t in ALL:
        assert "create_outcome_unknown" not in t.takes, t.name
    takers = {t.name for t in ALL if "callback_task_id" in t.takes}
    assert takers == {"note_callback_task", "note_early_callback"}
    assert not [t.name for t in ALL if "recovered_at" in (*t.takes, *dict(t.fixed))]
    assert [b.name for b in lifecycle.BIRTHS if "recovered_at" in b.may_hold] == ["rescued"]


@pytest.mark.parametrize(
    "state", [s for s in JobState if s not in {b.state for b in lifecycle.BIRTHS}]
)
def test_a_record_is_born_only_in_a_birth_state(store: JobStore, state: JobState) -> None:
    job_id = uuid.uuid4().hex
    with pytest.raises(IllegalTransitionError, match=f"no record is born {state.value}"):
        store.create(JobRecord(job_id=job_id, state=state))
    # and the create script refuses it on its own (the birth states are compiled in)
    keys = [store.key(job_id), store.counter_key(job_id)]
    with pytest.raises(redis.ResponseError, match=f"nbq: no birth in {state.value}"):
        store.redis.eval(CREATE_LUA, len(keys), *keys, 60, 1.0, job_id, state.value, "a", "b")
    assert not store.redis.exists(store.key(job_id))


def test_a_birth_requires_its_fields_and_no_sub_state_of_another(store: JobStore) -> None:
    with pytest.raises(IllegalTransitionError, match="needs"):
        store.create(JobRecord(job_id="r1", state=JobState.GENERATING, evolink_task_id="t"))
    with pytest.raises(IllegalTransitionError, match="needs"):
        store.create(JobRecord(job_id="f1", state=JobState.FAILED))
    with pytest.raises(IllegalTransitionError, match="cannot hold"):
        store.create(JobRecord(job_id="q1", create_outcome_unknown=True))
    with pytest.raises(IllegalTransitionError, match="cannot hold"):
        store.create(JobRecord(job_id="q2", callback_task_id="t"))
    rescued = JobRecord(
        job_id="r2",
        state=JobState.GENERATING,
        evolink_task_id="t",
        poll_token="p",
        recovered_at=1.0,
    )
    assert store.create(rescued)[1]


def test_a_record_written_by_the_previous_version_still_loads(store: JobStore) -> None:
    # Given a record as the previous version wrote it: the claim's create_sent flag
    job_id = uuid.uuid4().hex
    store.redis.hset(
        store.key(job_id),
        mapping={"job_id": job_id, "state": "submitting", "create_sent": "1", "attempts": "1"},
    )
    # Then it loads (the flag is ignored: submitting says the same) and moves on as usual
    assert store.require(job_id).state is JobState.SUBMITTING
    record, applied = store.apply(lifecycle.HAND_BACK, job_id, waiting_reason="5xx")
    assert applied and record is not None and record.state is JobState.QUEUED
