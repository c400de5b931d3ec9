"""The store's durability checks on real redis-servers: persistence at start, the epoch
marker, and WAIT for replicas."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.jobs.durability import (
    EpochWatcher,
    VolatileStoreError,
    check_persistence,
    check_settings_stores,
)
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from tests.support.procs import free_port, wait_until
from tests.support.redis_server import RedisServer

VOLATILE = ["--appendonly", "no", "--save", ""]


@pytest.fixture
def redis_with(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``redis_with(*args, password=None)``: a redis-server started with extra options."""
    servers: list[RedisServer] = []

    def make(*args: str, password: str | None = None) -> RedisServer:
        server = RedisServer(
            dir=tmp_path / f"r{len(servers)}", extra_args=list(args), password=password
        )
        server.dir.mkdir()
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def test_a_store_without_persistence_is_refused_with_one_line_naming_it_without_password(
    redis_with: Callable[..., RedisServer],
) -> None:
    server = redis_with(*VOLATILE, password="hunter2")
    with pytest.raises(VolatileStoreError) as refused:
        check_persistence(server.client(), server.url, allow_volatile=False)
    message = str(refused.value)
    assert "\n" not in message and "hunter2" not in message
    assert f"127.0.0.1:{server.port}" in message
    assert "appendonly" in message and "NBQ_ALLOW_VOLATILE_STORE=true" in message


def test_a_volatile_store_is_accepted_with_the_override_and_a_warning(
    redis_with: Callable[..., RedisServer],
) -> None:
    server = redis_with(*VOLATILE)
    with capture_logs() as logs:
        found = check_persistence(server.client(), server.url, allow_volatile=True)
    assert found is not None and found.volatile
    assert [e["event"] for e in logs] == ["store_volatile_allowed"]


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_an_evicting_store_is_refused_even_with_aof(
    redis_with: Callable[..., RedisServer], policy: str
) -> None:
    server = redis_with("--maxmemory", "100mb", "--maxmemory-policy", policy)
    with pytest.raises(VolatileStoreError, match=f"maxmemory-policy={policy}"):
        check_persistence(server.client(), server.url, allow_volatile=False)


def test_an_aof_store_passes_and_an_rdb_only_store_passes_with_a_warning(
    redis_server: RedisServer, redis_with: Callable[..., RedisServer]
) -> None:
    with capture_logs() as logs:
        aof = check_persistence(redis_server.client(), redis_server.url, allow_volatile=False)
    assert aof is not None and aof.appendonly == "yes" and logs == []
    rdb = redis_with("--appendonly", "no")
    rdb.client().config_set("save", "60 1")  # (redis 6.2 ignores a --save after --save "")
    with capture_logs() as logs:
        check_persistence(rdb.client(), rdb.url, allow_volatile=False)
    assert [e["event"] for e in logs] == ["store_rdb_only"]


def test_a_store_with_config_disabled_is_logged_and_accepted(
    redis_with: Callable[..., RedisServer],
) -> None:
    server = redis_with(*VOLATILE, "--rename-command", "CONFIG", "")
    with capture_logs() as logs:
        assert check_persistence(server.client(), server.url, allow_volatile=False) is None
    assert [e["event"] for e in logs] == ["store_persistence_unknown"]


def test_an_unreachable_store_is_not_refused_here() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    assert check_persistence(client, url, allow_volatile=False) is None


def test_a_volatile_broker_is_refused_too(
    redis_server: RedisServer, redis_with: Callable[..., RedisServer]
) -> None:
    broker = redis_with(*VOLATILE)
    settings = Settings(broker_url=broker.url, redis_url=redis_server.url)
    with pytest.raises(VolatileStoreError, match=r"^broker "):
        check_settings_stores(settings)


def test_a_producer_refuses_a_volatile_store_unless_allowed(
    redis_with: Callable[..., RedisServer],
) -> None:
    server = redis_with(*VOLATILE)
    with pytest.raises(VolatileStoreError):
        Producer(Settings(broker_url=server.url))
    allowed = Settings(broker_url=server.url, allow_volatile_store=True)
    Producer(allowed, runtime=Runtime.from_settings(allowed))


# -- the epoch marker ------------------------------------------------------------------


def _watcher(server: RedisServer, **kwargs: object) -> EpochWatcher:
    store = JobStore(server.client())
    return EpochWatcher(
        client=server.client(),
        key=store.epoch_key,
        url=server.url,
        index_prefix=f"{store.prefix}:state:",
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_flushed_store_is_reported_at_error_and_counted_once(
    redis_with: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_with(password="pw")
    counted: list[int] = []
    monkeypatch.setattr(metrics, "store_reset", lambda: counted.append(1))
    store = JobStore(server.client())
    first, second = _watcher(server), _watcher(server)
    with capture_logs() as logs:
        assert first.check() is False  # creates the marker
        assert second.check() is False  # adopts it, silently
    assert [e["event"] for e in logs] == ["store_epoch_created"]
    for n in range(3):
        store.create(JobRecord(job_id=f"j{n}"))
    assert first.check() is False  # unchanged; remembers 3 queued jobs

    server.client().flushall()
    with capture_logs() as logs:
        assert first.check() is True
        assert second.check() is True  # another process: sees the new epoch, not counted
        assert first.check() is False
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["store_reset_detected"] * 2
    assert errors[0]["store"] == f"redis://:***@127.0.0.1:{server.port}/0"
    assert errors[0]["active_jobs_at_last_check"] == 3
    assert counted == [1]


def test_on_a_sharded_store_the_active_jobs_are_counted_over_every_shard(
    redis_server: RedisServer,
) -> None:
    store = JobStore(redis_server.client(), shards=8)
    watcher = EpochWatcher(
        client=redis_server.client(),
        key=store.epoch_key,
        url=redis_server.url,
        index_prefix=f"{store.prefix}:state:",
        index_keys=store.index_keys,
    )
    watcher.check()
    for n in range(5):
        store.create(JobRecord(job_id=f"sharded-{n}"))
    assert len({store.index_key(JobState.QUEUED, f"sharded-{n}") for n in range(5)}) > 1
    watcher.check()
    # Then the jobs of every shard's index are counted (the unsharded key holds none)
    assert watcher.last_active["queued"] == 5
    redis_server.client().flushall()
    with capture_logs() as logs:
        assert watcher.check() is True
    assert [e["active_jobs_at_last_check"] for e in logs if e["log_level"] == "error"] == [5]


def test_the_bounded_check_reads_the_store_at_most_once_per_interval(
    redis_server: RedisServer,
) -> None:
    watcher = _watcher(redis_server, interval_s=60.0)
    watcher.check()
    redis_server.client().flushall()
    assert watcher.maybe_check() is False  # within the interval: no read
    watcher.last_check -= 61
    assert watcher.maybe_check() is True


# -- WAIT --------------------------------------------------------------------------------


def test_wait_replicas_waits_for_a_real_replica_and_warns_when_none_answers(
    redis_server: RedisServer, redis_with: Callable[..., RedisServer]
) -> None:
    lonely = JobStore(redis_server.client(), wait_replicas=1, wait_timeout_ms=50)
    with capture_logs() as logs:
        lonely.create(JobRecord(job_id="alone"))
    assert [e["event"] for e in logs] == ["store_write_not_replicated"]

    replica = redis_with("--replicaof", "127.0.0.1", str(redis_server.port))
    wait_until(
        lambda: replica.client().info("replication").get("master_link_status") == "up",
        timeout_s=30,
        what="replica link",
    )
    store = JobStore(redis_server.client(), wait_replicas=1, wait_timeout_ms=5000)
    assert store.wait_for_replicas() == 1
    store.create(JobRecord(job_id="replicated"))
    assert replica.client().exists(store.key("replicated"))
    assert JobStore(redis_server.client()).wait_for_replicas() is None  # off by default
