"""The dead-letter store: bounded, redacted, capped; replay re-checks and re-publishes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import redis

from nanobanana_queue.workers.deadletters import (
    ADD_LUA,
    FIRSTS_PER_REASON,
    MAX_BODY_CHARS,
    PURGE_LUA,
    DeadLetterStore,
    _script,
    build_letter,
    replay_letter,
)
from nanobanana_queue.workers.logs import register_secret
from nanobanana_queue.workers.settings import Settings
from tests.support.redis_server import RedisServer


def letter(reason: str = "body_shape", body: str = "[]", at: float | None = None, **kw: object):
    return build_letter(
        queue="submit",
        reason=reason,
        detail="d",
        hostname="w1@test",
        headers={"task": "nbq.submit", "id": "m1", **kw},
        body=body,
        content_type="application/json",
        content_encoding="utf-8",
        at=at,
    )


def test_the_store_keeps_at_most_its_bound_dropping_the_oldest_but_the_first(
    redis_server: RedisServer,
) -> None:
    store = DeadLetterStore(
        redis.Redis.from_url(redis_server.url), prefix="t1", max_entries=3, retention_s=3600
    )
    ids = [store.add(letter(at=time.time() + i)) for i in range(5)]
    assert store.count() == 3
    # the first of its reason (pinned: at most half the bound) and the two newest
    assert [x.id for x in store.list()] == [ids[4], ids[3], ids[0]]
    assert store.get(ids[1]) is None and store.stats().dropped == 2


def test_entries_past_their_retention_are_dropped_and_purge_empties(
    redis_server: RedisServer,
) -> None:
    store = DeadLetterStore(
        redis.Redis.from_url(redis_server.url), prefix="t2", max_entries=100, retention_s=60
    )
    store.add(letter(at=time.time() - 120))
    kept = store.add(letter(reason="expired"))
    assert [x.id for x in store.list()] == [kept]
    assert [x.id for x in store.list(reason="expired")] == [kept]
    assert store.list(reason="body_shape") == []
    assert store.purge(older_than_s=3600) == 0
    assert store.purge() == 1 and store.count() == 0


def test_a_letter_caps_its_body_and_redacts_secrets() -> None:
    register_secret("sk-very-secret-value")
    big = build_letter(
        queue="q",
        reason="oversized",
        detail="x",
        hostname="h",
        headers={"id": "sk-very-secret-value"},
        body="a" * (MAX_BODY_CHARS * 3),
        content_type=None,
        content_encoding=None,
    )
    assert big.body_truncated and len(big.body) < MAX_BODY_CHARS + 40
    assert big.body_bytes == MAX_BODY_CHARS * 3
    assert "sk-very-secret-value" not in big.model_dump_json() and big.redacted


def test_replay_refuses_a_letter_that_still_fails_and_republishes_a_fixed_one(
    redis_server: RedisServer,
) -> None:
    settings = Settings(broker_url=redis_server.url)
    bad = letter(body="[1]")
    assert replay_letter(settings, bad).refusal.reason == "body_shape"
    far = letter(body=json.dumps([[], {"job_id": "j1"}, {}]), eta="2999-01-01T00:00:00")
    outcome = replay_letter(settings, far)
    assert outcome.refusal is None and outcome.queue == "submit"
    client = redis.Redis.from_url(redis_server.url)
    raw = client.lpop("submit")
    assert isinstance(raw, bytes)
    sent = json.loads(raw)
    assert sent["headers"]["task"] == "nbq.submit" and "eta" not in sent["headers"]


@pytest.mark.integration  # runs nbq as a process
def test_the_cli_lists_shows_replays_and_purges(redis_server: RedisServer) -> None:
    env = {**os.environ, "NBQ_BROKER_URL": redis_server.url, "NBQ_REDIS_URL": redis_server.url}
    store = DeadLetterStore.from_settings(Settings(broker_url=redis_server.url))
    store.purge()
    fixable = store.add(letter(reason="expired", body=json.dumps([[], {"job_id": "j9"}, {}])))
    broken = store.add(letter(body="[1]"))

    def nbq(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nanobanana_queue.producers.cli.main", "dead", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    listed = json.loads(nbq("list", "--json", "--reason", "expired").stdout)
    header = nbq("list").stdout.splitlines()[0]
    assert header.startswith("2 dead letter(s), ") and "; 0 dropped by these bounds" in header
    assert [x["id"] for x in listed] == [fixable]
    assert json.loads(nbq("show", broken).stdout)["body"] == "[1]"
    refused = nbq("replay", broken, check=False)
    assert refused.returncode == 1 and "body_shape" in refused.stderr
    assert "replayed" in nbq("replay", fixable).stdout
    assert store.get(fixable) is None and store.get(broken) is not None
    assert json.loads(nbq("purge", "--yes", "--json").stdout) == {"purged": 1}


# -- the scripts, called directly with the layout their headers document ------------------

_SCRIPTS = {
    name: _script(name)
    for name in ("deadletter_common.lua", "deadletter_add.lua", "deadletter_purge.lua")
}


@pytest.mark.parametrize("name", sorted(_SCRIPTS))
def test_each_dead_letter_script_header_documents_every_keys_and_argv_it_reads(
    name: str,
) -> None:
    text = _SCRIPTS[name]
    header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    for kind in ("KEYS", "ARGV"):
        for position in sorted(set(re.findall(rf"{kind}\[(\d+)\]", body))):
            assert re.search(rf"-- {kind}\[{position}\]", header), (name, kind, position)
    assert "Returns" in header and text.startswith(f"-- {name}:")


def _keys(prefix: str) -> list[str]:
    tag = f"{{{prefix}:dead}}"
    return [
        f"{tag}:{k}" for k in ("entries", "index", "meta", "tags", "byreason", "counts", "firsts")
    ]


def _add(r: redis.Redis, prefix: str, id_: str, at: float, doc: str, cutoff: str, **bounds: int):
    """deadletter_add.lua with the ARGV its header documents (0 pinned unless asked)."""
    return r.eval(
        ADD_LUA, 7, *_keys(prefix), 0, id_, str(at), f"{at:020.6f}", bounds.get("reason", "r"),
        doc, cutoff, bounds.get("max_entries", 10), bounds.get("max_bytes", 10**9),
        bounds.get("firsts", 0),
    )  # fmt: skip


def test_the_add_script_stores_a_letter_and_drops_the_too_old_and_the_over_bound(
    redis_server: RedisServer,
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    entries, index, meta = _keys("d1")[:3]
    # Given two letters, one older than the cutoff
    assert _add(r, "d1", "old", 10, '{"n":0}', "0", max_entries=5) == [0, 0]
    assert _add(r, "d1", "a", 100, '{"n":1}', "0", max_entries=5) == [0, 0]
    # When a third comes with a cutoff past the old one and a bound of 1
    aged, dropped = _add(r, "d1", "b", 200, '{"n":2}', "50", max_entries=1)
    # Then the old one went for its age, "a" for the bound: each counted as such
    assert (aged, dropped) == (1, 1)
    assert r.hgetall(entries) == {b"b": b'{"n":2}'}
    assert r.zrange(index, 0, -1, withscores=True) == [(b"b", 200.0)]
    assert r.hget(meta, "bytes") == b"7" and r.hget(meta, "dropped") == b"1"


def test_the_add_script_keeps_the_stored_bytes_within_its_byte_bound(
    redis_server: RedisServer,
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    for n in range(10):
        _add(r, "d3", f"l{n}", 100 + n, "x" * 100, "0", max_bytes=350)
    assert r.hlen(_keys("d3")[0]) == 3  # 3 x 100 bytes fit, a fourth would not
    assert r.hmget(_keys("d3")[2], ["bytes", "dropped"]) == [b"300", b"7"]


def test_the_purge_script_removes_every_letter_up_to_its_cutoff(
    redis_server: RedisServer,
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    keys = _keys("d2")
    for n, at in enumerate((10, 20, 30)):
        _add(r, "d2", f"l{n}", at, "{}", "0")
    assert r.eval(PURGE_LUA, 7, *keys, 0, "20", "") == 2  # at or before the cutoff
    assert r.hkeys(keys[0]) == [b"l2"] and r.zrange(keys[1], 0, -1) == [b"l2"]
    assert r.eval(PURGE_LUA, 7, *keys, 0, "+inf", "") == 1
    assert r.exists(*keys) == 0


# -- the bounds against a flood (issue 25) ----------------------------------------------


def poison(n: int, reason: str = "body_shape", size: int = 20_000, at: float | None = None):
    """A refused message like the flood's: ``size`` bytes of \\x01, hostile headers."""
    return build_letter(
        queue="submit\x1b[2J",
        reason=reason,
        detail="d",
        hostname="w1@test",
        headers={"task": "nbq.submit\x1b]0;PWNED\x07", "id": f"m{n}"},
        body=b"\x01" * size,
        content_type="application/json",
        content_encoding="utf-8",
        at=at,
    )


def test_a_letter_is_capped_by_its_stored_size_not_its_raw_length() -> None:
    # Given a 20 kB body of control bytes (each is six bytes once escaped as JSON)
    stored = poison(1).model_dump_json()
    # Then the stored letter is about the cap, not five times it
    assert len(stored.encode()) <= MAX_BODY_CHARS + 4 * 1024 + 1024
    assert json.loads(stored)["body_truncated"] is True


def test_a_poison_flood_keeps_redis_memory_within_the_byte_budget(
    redis_server: RedisServer,
) -> None:
    # Given a 1 MiB byte budget (the default is 32 MiB) and an empty store
    r = redis.Redis.from_url(redis_server.url)
    store = DeadLetterStore(
        r, prefix="flood", max_entries=5000, retention_s=3600, max_bytes=1024 * 1024
    )
    before = int(r.info("memory")["used_memory"])
    # When 300 poison messages of 20 kB of \x01 arrive (the reported flood, scaled down)
    dropped = sum(store.put(poison(n)) for n in range(300))
    # Then Redis grew by no more than the budget, and the drops were counted
    growth = int(r.info("memory")["used_memory"]) - before
    stats = store.stats()
    assert growth <= store.max_bytes, (growth, stats)
    assert stats.bytes <= store.max_bytes
    assert stats.dropped == dropped == 300 - stats.count > 200


def test_small_letters_are_bounded_by_count_and_their_memory_too(
    redis_server: RedisServer,
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    store = DeadLetterStore(
        r, prefix="small", max_entries=5000, retention_s=3600, max_bytes=512 * 1024
    )
    before = int(r.info("memory")["used_memory"])
    for n in range(1000):
        store.put(poison(n, size=10))
    assert int(r.info("memory")["used_memory"]) - before <= store.max_bytes
    assert store.stats().dropped > 0


def test_a_flood_keeps_the_first_letters_of_every_reason_and_the_latest(
    redis_server: RedisServer,
) -> None:
    # Given the first letters of two reasons, then a flood of one of them
    store = DeadLetterStore(
        redis.Redis.from_url(redis_server.url), prefix="ev", max_entries=20, retention_s=3600
    )
    t0 = time.time()
    firsts = [store.add(poison(n, reason="body_shape", size=10, at=t0 + n)) for n in range(8)]
    other = [store.add(poison(n, reason="expired", size=10, at=t0 + 10 + n)) for n in range(3)]
    flood = [store.add(poison(n, reason="body_shape", size=10, at=t0 + 20 + n)) for n in range(200)]
    # Then the first letters of the flooding reason are still there (the evidence), the
    # other reason lost nothing, and the rest of the room holds the newest of the flood
    kept = {x.id for x in store.list(limit=100)}
    assert set(firsts[:FIRSTS_PER_REASON]) <= kept
    assert set(other) <= kept
    assert set(flood[-(20 - FIRSTS_PER_REASON - len(other)) :]) <= kept
    assert len(kept) == 20
    assert store.stats().dropped == 8 + 200 - (20 - len(other))


def test_remove_and_purge_keep_the_byte_total_exact(redis_server: RedisServer) -> None:
    store = DeadLetterStore(
        redis.Redis.from_url(redis_server.url), prefix="acct", max_entries=50, retention_s=3600
    )
    ids = [store.add(poison(n, size=100)) for n in range(10)]
    full = store.stats().bytes
    assert store.remove(ids[0]) and not store.remove(ids[0])
    assert store.remove(ids[-1])
    assert 0 < store.stats().bytes < full and store.stats().count == 8
    assert store.purge() == 8
    assert store.stats().bytes == 0 and store.stats().pinned == 0
