"""A job's named transitions: each one agrees with the state table, the table has no move
no transition makes, every transition runs on a real store from each of its states, the
update script refuses what the table forbids, and docs/job-states.md shows the code's
table."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.lifecycle import ALL, IllegalTransitionError, Transition
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import TRANSITIONS, JobState
from nanobanana_queue.workers.jobs.store import JobStore
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


@pytest.mark.parametrize(
    ("transition", "source"), _cases(), ids=[f"{t.name}-{s.value}" for t, s in _cases()]
)
def test_each_transition_applies_from_each_of_its_states_on_a_real_store(
    store: JobStore, transition: Transition, source: JobState
) -> None:
    # Given a job in the source state holding every guard field and every unset field
    job_id = uuid.uuid4().hex
    held = {name: "x" for name in (*transition.guards, *transition.unsets)}
    fields = {k: v for k, v in held.items() if k in _PLAIN}
    created, _ = store.create(JobRecord(job_id=job_id, state=source, **fields))
    expect: dict[str, str | float | None] = {
        g: (created.updated_at if g == "updated_at" else fields.get(g)) for g in transition.guards
    }
    # When the transition is applied with its guards
    record, applied = store.apply(transition, job_id, expect=expect)
    # Then the job is in the target state (a note keeps it) without the unset fields
    assert applied and record is not None
    assert record.state is (transition.target or source)
    raw = store.redis.hkeys(store.key(job_id))
    assert not {u.encode() for u in transition.unsets} & set(raw)


#: Unset/guard fields a test record can hold as the plain string "x".
_PLAIN = {"waiting_reason", "evolink_task_id", "poll_token", "callback_task_id"}


def test_a_guard_that_does_not_hold_refuses_the_transition(store: JobStore) -> None:
    job_id = uuid.uuid4().hex
    store.create(JobRecord(job_id=job_id, state=JobState.GENERATING, poll_token="live"))
    _, applied = store.apply(lifecycle.COMPLETED, job_id, expect={"poll_token": "stale"})
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
