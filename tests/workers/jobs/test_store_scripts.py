"""The store's Lua scripts (workers/jobs/*.lua) as Redis sees them: every key a script
touches is one of its call's KEYS, a sharded store's KEYS share one slot (Redis Cluster),
the headers document every KEYS[i] and ARGV[i], and the scripts called directly with
their documented layout do what the header says."""

from __future__ import annotations

import re
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobError, JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.jobs.store import CREATE_LUA, INDEXED_STATES, UPDATE_LUA, JobStore
from tests.support.records import seed
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = {"create.lua": CREATE_LUA, "update.lua": UPDATE_LUA}
_QUOTED = re.compile(r'"(.*?)(?<!\\)"')


@dataclass
class ScriptCall:
    """One EVAL/EVALSHA a client sent, and the commands its script ran."""

    keys: list[str]
    touched: list[str] = field(default_factory=list)


def _monitor_lines(server: RedisServer, work: Callable[[], None]) -> list[str]:
    """MONITOR's lines for everything ``work`` sent, up to an ``ECHO`` end mark sent
    after it (the mark's own line included)."""
    monitor = redis.Redis.from_url(server.url).monitor()
    monitor._start_monitor()
    try:
        work()
        end = f"end-{uuid.uuid4().hex}"
        server.client().echo(end)
        lines: list[str] = []
        while True:
            raw = monitor.connection.read_response()
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            lines.append(line)
            if f'"{end}"' in line:
                return lines
    finally:
        monitor.connection.disconnect()


def _monitored_calls(server: RedisServer, work: Callable[[], None]) -> list[ScriptCall]:
    """Run ``work`` under MONITOR; group each script's commands under the call that ran it.

    Each script call is followed by an ``ECHO`` mark from the same client, so a call and
    its commands are grouped whatever order a Redis version prints them in.
    """
    lines = _monitor_lines(server, work)
    keys_of = server.client()
    calls: list[ScriptCall] = []
    group: list[tuple[bool, list[str]]] = []
    for line in lines:
        client = line.split("[", 1)[1].split("]", 1)[0].split(" ", 1)[1]
        args = [a.replace('\\"', '"') for a in _QUOTED.findall(line.split("]", 1)[1])]
        name = args[0].upper()
        if name == "ECHO":
            if group:
                declared = [a for lua, a in group if not lua]
                assert declared, f"script commands without a script call: {group}"
                (first, *_) = declared
                call = ScriptCall(keys=first[3 : 3 + int(first[2])])
                for lua, command in group:
                    if lua:
                        found = keys_of.command_getkeys(*command)
                        call.touched += [k.decode() if isinstance(k, bytes) else k for k in found]
                    else:
                        assert command[3 : 3 + int(command[2])] == call.keys
                calls.append(call)
            group = []
        elif client == "lua":
            group.append((True, args))
        elif name in ("EVAL", "EVALSHA"):
            group.append((False, args))
    return calls


def _lifecycle(store: JobStore, server: RedisServer) -> Callable[[], None]:
    """Every kind of script call the store makes, each followed by a mark."""
    mark = server.client()

    def step(call: Callable[[], Any]) -> None:
        call()
        mark.echo("mark")

    # Fixed ids, five different shards of a 16-shard store (6, 12, 10, 9, 15): random ids
    # would all land in one shard once in 16**4 runs, and the spread check would fail.
    ids = iter(uuid.UUID(int=n).hex for n in range(1, 6))

    def work() -> None:
        job_id = next(ids)
        told = JobRecord(job_id=job_id, poll_token="t1", notify_url="https://h.example/n")
        step(lambda: store.create(told))  # its ends go to the notify outbox
        step(lambda: store.create(JobRecord(job_id=job_id)))  # exists
        error = JobError(code="x", message="y")
        step(lambda: store.create(JobRecord(job_id=next(ids), state=JobState.FAILED, error=error)))
        step(lambda: store.apply(lifecycle.CLAIM_SUBMIT, job_id))
        step(lambda: store.apply(lifecycle.STORED, job_id, objects=[]))  # refused
        step(
            lambda: store.apply(
                lifecycle.TASK_CREATED, job_id, evolink_task_id="task-1", poll_token="t2"
            )
        )
        recreate: dict[str, Any] = {
            "previous_task_ids": ["task-1"],
            "waiting_reason": "w",
            "error": error,
        }
        step(
            lambda: store.apply(lifecycle.RECREATE, job_id, expect={"poll_token": "t2"}, **recreate)
        )
        step(lambda: store.apply(lifecycle.FAIL, job_id, error=error))
        retry: dict[str, Any] = {"previous_task_ids": [], "create_seq": 2, "waiting_reason": "w"}
        step(lambda: store.apply(lifecycle.MANUAL_RETRY, job_id, **retry))  # nbq retry
        step(lambda: store.apply(lifecycle.CANCEL, job_id))
        step(lambda: store.apply(lifecycle.NOTE_WAITING, next(ids), waiting_reason="w"))
        durable = JobStore(
            store.redis, prefix=store.prefix, shards=store.shards, wait_replicas=1,
            wait_timeout_ms=1,
        )  # fmt: skip
        other = next(ids)
        step(lambda: durable.create(JobRecord(job_id=other)))  # EVAL + WAIT
        step(lambda: durable.apply(lifecycle.CLAIM_SUBMIT, other, durable=True))
        _, command = store.create_eval_args(JobRecord(job_id=next(ids)))
        # the one-round-trip enqueue's way (producers/publish.py)
        step(lambda: store.redis.execute_command(*command))

    return work


@pytest.fixture
def monitored(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: MONITOR sees only its commands."""
    server = RedisServer(dir=tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("shards", [0, 16], ids=["one-redis", "sharded"])
def test_every_key_a_script_touches_is_in_the_keys_of_its_call(
    monitored: RedisServer, shards: int
) -> None:
    store = JobStore(monitored.client(), prefix="nbq", shards=shards)
    calls = _monitored_calls(monitored, _lifecycle(store, monitored))
    assert len(calls) == 14
    for call in calls:
        assert call.touched, call
        assert set(call.touched) <= set(call.keys), call


def test_every_keys_entry_of_a_sharded_store_call_hashes_to_one_slot(
    monitored: RedisServer,
) -> None:
    store = JobStore(monitored.client(), prefix="nbq", shards=16)
    calls = _monitored_calls(monitored, _lifecycle(store, monitored))
    assert len(calls) == 14
    slots = set()
    for call in calls:
        call_slots = {key_slot(k.encode()) for k in call.keys}
        assert len(call_slots) == 1, call.keys
        slots |= call_slots
    assert len(slots) == 5  # the five jobs' shards; each call stays in its own


# -- the headers --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_script_header_documents_every_keys_and_argv_position_it_reads(name: str) -> None:
    text = SCRIPTS[name]
    header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    for kind in ("KEYS", "ARGV"):
        for position in sorted(set(re.findall(rf"{kind}\[(\d+)\]", body))):
            assert re.search(rf"{kind}\[{position}(\]|\.\.)", header), (name, kind, position)
    assert "Returns" in header


def test_the_scripts_ship_in_the_wheel() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "*.lua" in pyproject["tool"]["setuptools"]["package-data"]["*"]


# -- the documented layouts, called directly -----------------------------------------------


def _update_argv(
    *,
    now: str,
    to: str = "",
    retention: int = 100,
    job_id: str,
    allowed: tuple[str, ...] = (),
    expect: tuple[tuple[str, str], ...] = (),
    sets: tuple[tuple[str, str], ...] = (),
    incr: tuple[tuple[str, float], ...] = (),
    unset: tuple[str, ...] = (),
    outbox: tuple[str, ...] = (),
    tail: tuple[str, ...] = (),
) -> list[Any]:
    """update.lua's ARGV built from its header, not from the store (``tail``: the
    optional count and index words)."""
    argv: list[Any] = [now, to, retention, job_id, *(s.value for s in INDEXED_STATES)]
    argv += [len(allowed), *allowed, len(expect), *(x for pair in expect for x in pair)]
    argv += [len(sets), *(x for pair in sets for x in pair)]
    argv += [len(incr), *(x for pair in incr for x in pair), len(unset), *unset]
    argv += [len(outbox), *outbox, *tail]
    return argv


def _keys(prefix: str, job_id: str) -> list[str]:
    return [
        f"{prefix}:job:{job_id}",
        f"{prefix}:metrics:c:jobs_state",
        *(f"{prefix}:state:{s.value}" for s in INDEXED_STATES),
        f"{prefix}:notify:outbox",
    ]


def _as_dict(flat: list[bytes]) -> dict[str, str]:
    items = [v.decode() for v in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


def test_the_scripts_called_with_their_documented_layout_create_move_and_refuse(
    session_redis: RedisServer,
) -> None:
    r = session_redis.client()
    prefix, job_id = f"d{uuid.uuid4().hex[:8]}", "j1"
    job, counter, queued = _keys(prefix, job_id)[:3]
    create_keys = [job, counter, queued]
    create_argv: list[str | int] = [
        100,
        "10.5",
        job_id,
        "queued",
        "job_id",
        job_id,
        "state",
        "queued",
    ]
    create_argv += ["updated_at", "10.5"]
    assert r.eval(CREATE_LUA, 3, *create_keys, *create_argv) == [1]
    assert r.eval(CREATE_LUA, 3, *create_keys, *create_argv) == [1]  # own stamp: a retry
    create_argv[1] = create_argv[-1] = "11.0"
    exists, fields = r.eval(CREATE_LUA, 3, *create_keys, *create_argv)
    assert exists == 0 and _as_dict(fields)["updated_at"] == "10.5"
    assert r.zscore(queued, job_id) == 10.5 and r.ttl(job) == -1  # active: no TTL
    assert r.hgetall(counter) == {b'["queued"]': b"1"}

    keys = _keys(prefix, job_id)
    refused = _update_argv(now="12.0", to="submitting", job_id=job_id, allowed=("generating",))
    applied, fields = r.eval(UPDATE_LUA, len(keys), *keys, *refused)
    assert applied == 0 and _as_dict(fields)["state"] == "queued"
    move = _update_argv(
        now="13.0",
        to="submitting",
        job_id=job_id,
        allowed=("queued",),
        expect=(("poll_token", ""),),
        sets=(("attempts", "1"),),
        incr=(("polls", 2.5),),
        unset=("job_id",),
    )
    applied, fields = r.eval(UPDATE_LUA, len(keys), *keys, *move)
    record = _as_dict(fields)
    assert applied == 1 and record["state"] == "submitting" and record["t_submitting"] == "13.0"
    assert (record["attempts"], record["polls"], "job_id" in record) == ("1", "2.5", False)
    assert r.zscore(queued, job_id) is None and r.zscore(keys[3], job_id) == 13.0
    assert r.eval(UPDATE_LUA, len(keys), *keys, *move)[0] == 1  # own stamp: a retry
    assert r.hget(job, "polls") == b"2.5"  # applied once
    assert r.hgetall(counter) == {b'["queued"]': b"1", b'["submitting"]': b"1"}
    assert r.zcard(keys[-1]) == 0  # not an end: nothing in the notify outbox
    # an end of a job whose producer ('' = none) is an outbox producer: in the outbox
    end = _update_argv(now="14.0", to="failed", job_id=job_id, outbox=("other", ""))
    assert r.eval(UPDATE_LUA, len(keys), *keys, *end)[0] == 1
    assert r.zrange(keys[-1], 0, -1, withscores=True) == [(f"{job_id}|14.0".encode(), 14.0)]
    missing = _keys(prefix, "nope")
    assert r.eval(UPDATE_LUA, len(missing), *missing, *_update_argv(now="1", job_id="x")) == [
        0,
        [],
    ]


def test_the_store_builds_the_update_argv_its_script_header_documents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from nanobanana_queue.workers.jobs import store as store_module

    monkeypatch.setattr(store_module, "time", SimpleNamespace(time=lambda: 12.5))
    sent: dict[str, Any] = {}

    def capture(*, keys: list[str], args: list[Any]) -> list[Any]:
        sent.update(keys=keys, args=args)
        return [0, []]

    store = JobStore(redis.Redis(), prefix="p", retention_s=100)  # no connection is made
    store._update = capture  # type: ignore[assignment]
    # the caller's fields, then the transition's fixed ones; its bumps after the caller's
    store.apply(lifecycle.COMPLETED, "j1", expect={"poll_token": None}, result_urls=["u"])
    assert sent["keys"] == _keys("p", "j1")
    assert sent["args"] == _update_argv(
        now="12.5",
        to="downloading",
        job_id="j1",
        allowed=("generating",),
        expect=(("poll_token", ""),),
        sets=(("result_urls", '["u"]'), ("progress", "100")),
        incr=(("polls", 1),),
    )
    # a note that keeps its index time says so in the last word (after a count word)
    store.apply(
        lifecycle.CLAIM_POLL, "j1", expect={"poll_token": "a"}, poll_token="b", next_poll_at=3.0
    )
    assert sent["args"] == _update_argv(
        now="12.5",
        job_id="j1",
        allowed=("generating",),
        expect=(("poll_token", "a"),),
        sets=(("poll_token", "b"), ("next_poll_at", "3.0")),
        tail=("1", "0"),
    )


def test_a_note_that_keeps_its_index_time_leaves_the_score_and_a_move_writes_it(
    session_redis: RedisServer,
) -> None:
    # Given a generating job indexed at time 10
    r = session_redis.client()
    prefix = f"d{uuid.uuid4().hex[:8]}"
    store = JobStore(r, prefix=prefix)
    seed(store, JobRecord(job_id="j1", state=JobState.GENERATING, poll_token="a"))
    index = store.index_key(JobState.GENERATING)
    r.zadd(index, {"j1": 10.0})
    keys = store.update_keys("j1")
    claim = _update_argv(
        now="20.0",
        job_id="j1",
        allowed=("generating",),
        expect=(("poll_token", "a"),),
        sets=(("poll_token", "b"),),
        tail=("1", "0"),
    )
    # When a note says "index: 0", the record changes and the score stays
    assert r.eval(UPDATE_LUA, len(keys), *keys, *claim)[0] == 1
    assert store.require("j1").poll_token == "b" and r.zscore(index, "j1") == 10.0
    # and without the word a note refreshes it
    note = _update_argv(now="30.0", job_id="j1", allowed=("generating",))
    assert r.eval(UPDATE_LUA, len(keys), *keys, *note)[0] == 1
    assert r.zscore(index, "j1") == 30.0
    # and even with it a move writes its new state's index
    move = _update_argv(
        now="40.0", to="downloading", job_id="j1", allowed=("generating",), tail=("1", "0")
    )
    assert r.eval(UPDATE_LUA, len(keys), *keys, *move)[0] == 1
    assert r.zscore(index, "j1") is None
    assert r.zscore(store.index_key(JobState.DOWNLOADING), "j1") == 40.0


def test_the_update_script_refuses_a_move_outside_the_state_table_whatever_it_is_told(
    session_redis: RedisServer,
) -> None:
    # Given a queued job, and a caller that (wrongly) allows the move from queued
    r = session_redis.client()
    store = JobStore(r, prefix=f"d{uuid.uuid4().hex[:8]}")
    created, _ = store.create(JobRecord(job_id="j1"))
    keys = store.update_keys("j1")
    illegal = _update_argv(now="20.0", to="downloading", job_id="j1", allowed=("queued",))
    # Then the script refuses with an error and writes nothing
    with pytest.raises(redis.ResponseError, match="illegal move queued -> downloading"):
        r.eval(UPDATE_LUA, len(keys), *keys, *illegal)
    assert store.require("j1") == created
    assert r.zscore(store.index_key(JobState.QUEUED), "j1") == created.updated_at
    # and the same script moves what the table allows
    legal = _update_argv(now="21.0", to="submitting", job_id="j1", allowed=("queued",))
    assert r.eval(UPDATE_LUA, len(keys), *keys, *legal)[0] == 1


def test_the_state_table_compiled_into_the_update_script_is_the_pythons() -> None:
    from nanobanana_queue.workers.jobs.state import TRANSITIONS

    line = next(x for x in UPDATE_LUA.splitlines() if x.startswith("local moves = "))
    for source, targets in TRANSITIONS.items():
        row = re.search(rf'\["{source.value}"\] = \{{(.*?)\}}', line)
        assert row is not None, source
        assert set(re.findall(r'\["(\w+)"\] = true', row.group(1))) == {t.value for t in targets}


# -- what one transition writes ------------------------------------------------------------
# (its cost, the script's commands per move, is benchmarks/redis_commands.py's to report)


def _fields(server: RedisServer, key: str) -> set[str]:
    return {k.decode() if isinstance(k, bytes) else k for k in server.client().hkeys(key)}


def test_a_move_with_increments_and_unsets_writes_exactly_its_fields(
    session_redis: RedisServer,
) -> None:
    # Given a job claimed for submit (no waiting_reason, error or callback_task_id)
    store = JobStore(session_redis.client(), prefix=f"d{uuid.uuid4().hex[:8]}")
    store.create(JobRecord(job_id="j1"))
    store.apply(lifecycle.CLAIM_SUBMIT, "j1")
    before = _fields(session_redis, store.key("j1"))

    # When the create's answer is recorded with two increments and three unsets
    store.apply(
        lifecycle.TASK_CREATED,
        "j1",
        incr={"credits_paid": 1.6},  # and paid_creates + 1, the transition's own
        evolink_task_id="task-1",
        poll_token="p1",
    )

    # Then the increments and sets are there, and the unset fields absent as before
    record = store.require("j1")
    assert (record.credits_paid, record.paid_creates, record.attempts) == (1.6, 1, 1)
    assert (record.evolink_task_id, record.poll_token) == ("task-1", "p1")
    after = _fields(session_redis, store.key("j1"))
    assert {"waiting_reason", "error", "callback_task_id"}.isdisjoint(before | after)
    assert before <= after  # nothing the move does not own is removed
    raw = session_redis.client().hmget(store.key("j1"), "paid_creates", "attempts")
    assert raw == [b"1", b"1"]  # integers stay integers, as HINCRBYFLOAT writes them


def test_a_sum_reads_back_as_the_double_python_computes(session_redis: RedisServer) -> None:
    store = JobStore(session_redis.client(), prefix=f"d{uuid.uuid4().hex[:8]}")
    store.create(
        JobRecord(job_id="j1", state=JobState.FAILED, error=JobError(code="x", message="y"))
    )
    total = 0.0
    for amount in (0.1, 0.2, 1e-7, 2.5, 1 / 3):
        moved, applied = store.apply(
            lifecycle.NOTE_TASK_OF_GONE_JOB,
            "j1",
            incr={"credits_paid": amount},
            evolink_task_id="t",
        )
        total += amount
        assert applied and moved is not None and moved.credits_paid == total
        assert store.require("j1").credits_paid == total


def test_an_increment_of_a_field_that_is_not_a_number_writes_nothing(
    session_redis: RedisServer,
) -> None:
    r = session_redis.client()
    store = JobStore(r, prefix=f"d{uuid.uuid4().hex[:8]}")
    created, _ = store.create(JobRecord(job_id="j1", waiting_reason="quota"))
    # (the store refuses an increment its transition does not declare; the script alone:)
    keys = store.update_keys("j1")
    argv = _update_argv(
        now="30.0",
        job_id="j1",
        allowed=("queued",),
        sets=(("progress", "5"),),
        incr=(("waiting_reason", 1),),
    )
    with pytest.raises(redis.ResponseError, match="not a number: waiting_reason"):
        r.eval(UPDATE_LUA, len(keys), *keys, *argv)
    assert store.require("j1") == created


def _published(pubsub: Any) -> list[tuple[str, str]]:
    """The messages received so far (subscribed before the writes: each is here already
    or arrives within the poll)."""
    got: list[tuple[str, str]] = []
    while (message := pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)) is not None:
        got.append((message["channel"].decode(), message["data"].decode()))
    return got


def test_update_publishes_an_applied_end_once_per_call_and_nothing_else(
    session_redis: RedisServer,
) -> None:
    """The optional ``publish`` word: an applied move into an end state (and a retried
    call that finds its own such move) publishes the state on <publish>:jobend:<id>; a
    refused write, a move that is no end, and a call without the word publish nothing."""
    r = session_redis.client()
    prefix, job_id = f"p{uuid.uuid4().hex[:8]}", "j1"
    keys = _keys(prefix, job_id)
    channel = f"{prefix}:jobend:{job_id}"
    pubsub = r.pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=1.0) is not None  # the subscribe confirmation
    r.hset(keys[0], mapping={"state": "queued", "updated_at": "1.0"})
    tail = ("1", "1", prefix)
    move = _update_argv(now="2.0", to="submitting", job_id=job_id, tail=tail)
    assert r.eval(UPDATE_LUA, len(keys), *keys, *move)[0] == 1
    refused = _update_argv(now="3.0", to="failed", job_id=job_id, allowed=("queued",), tail=tail)
    assert r.eval(UPDATE_LUA, len(keys), *keys, *refused)[0] == 0
    end = _update_argv(now="4.0", to="failed", job_id=job_id, tail=tail)
    assert r.eval(UPDATE_LUA, len(keys), *keys, *end)[0] == 1
    assert _published(pubsub) == [(channel, "failed")]
    assert r.eval(UPDATE_LUA, len(keys), *keys, *end)[0] == 1  # own stamp: a retry
    assert _published(pubsub) == [(channel, "failed")]  # its answer may have been lost
    r.hset(keys[0], mapping={"state": "queued", "updated_at": "5.0"})
    silent = _update_argv(now="6.0", to="failed", job_id=job_id)  # no publish word
    assert r.eval(UPDATE_LUA, len(keys), *keys, *silent)[0] == 1
    assert _published(pubsub) == []
    pubsub.close()
