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

from tests.support.redis_server import RedisServer
from workers.deadletters import (
    ADD_LUA,
    MAX_BODY_CHARS,
    PURGE_LUA,
    DeadLetterStore,
    build_letter,
    replay_letter,
)
from workers.logs import register_secret
from workers.settings import Settings


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


def test_the_store_keeps_at_most_its_bound_dropping_the_oldest(redis_server: RedisServer) -> None:
    store = DeadLetterStore(
        redis.Redis.from_url(redis_server.url), prefix="t1", max_entries=3, retention_s=3600
    )
    ids = [store.add(letter(at=time.time() + i)) for i in range(5)]
    assert store.count() == 3
    assert [x.id for x in store.list()] == ids[:1:-1]
    assert store.get(ids[0]) is None


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


def test_the_cli_lists_shows_replays_and_purges(redis_server: RedisServer) -> None:
    env = {**os.environ, "NBQ_BROKER_URL": redis_server.url, "NBQ_REDIS_URL": redis_server.url}
    store = DeadLetterStore.from_settings(Settings(broker_url=redis_server.url))
    store.purge()
    fixable = store.add(letter(reason="expired", body=json.dumps([[], {"job_id": "j9"}, {}])))
    broken = store.add(letter(body="[1]"))

    def nbq(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "producers.cli.main", "dead", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    listed = json.loads(nbq("list", "--json", "--reason", "expired").stdout)
    assert [x["id"] for x in listed] == [fixable]
    assert json.loads(nbq("show", broken).stdout)["body"] == "[1]"
    refused = nbq("replay", broken, check=False)
    assert refused.returncode == 1 and "body_shape" in refused.stderr
    assert "replayed" in nbq("replay", fixable).stdout
    assert store.get(fixable) is None and store.get(broken) is not None
    assert json.loads(nbq("purge", "--yes", "--json").stdout) == {"purged": 1}


# -- the scripts, called directly with the layout their headers document ------------------

_SCRIPTS = {"deadletter_add.lua": ADD_LUA, "deadletter_purge.lua": PURGE_LUA}


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


def test_the_add_script_stores_a_letter_and_drops_the_too_old_and_the_over_bound(
    redis_server: RedisServer,
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    entries, index = "{d1:dead}:entries", "{d1:dead}:index"
    # Given two letters, one older than the cutoff
    assert r.eval(ADD_LUA, 2, entries, index, "old", "10", '{"n":0}', "0", 5) == 0
    assert r.eval(ADD_LUA, 2, entries, index, "a", "100", '{"n":1}', "0", 5) == 0
    # When a third comes with a cutoff past the old one and a bound of 1
    dropped = r.eval(ADD_LUA, 2, entries, index, "b", "200", '{"n":2}', "50", 1)
    # Then the old one went for its age (counted), "a" for the bound (not counted)
    assert dropped == 1
    assert r.hgetall(entries) == {b"b": b'{"n":2}'}
    assert r.zrange(index, 0, -1, withscores=True) == [(b"b", 200.0)]


def test_the_purge_script_removes_every_letter_up_to_its_cutoff(
    redis_server: RedisServer,
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    entries, index = "{d2:dead}:entries", "{d2:dead}:index"
    for n, at in enumerate((10, 20, 30)):
        r.eval(ADD_LUA, 2, entries, index, f"l{n}", str(at), "{}", "0", 10)
    assert r.eval(PURGE_LUA, 2, entries, index, "20") == 2  # at or before the cutoff
    assert r.hkeys(entries) == [b"l2"] and r.zrange(index, 0, -1) == [b"l2"]
    assert r.eval(PURGE_LUA, 2, entries, index, "+inf") == 1
    assert r.exists(entries, index) == 0
