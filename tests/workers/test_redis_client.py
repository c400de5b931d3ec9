"""The one Redis client factory: Sentinel URLs, passwords as secrets, kombu's view of them,
and the job store's scripts that recognise their own retried run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from nanobanana_queue.workers.app import celery_config
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.redis_client import (
    kombu_sentinel_url,
    parse_sentinel_url,
    redis_client,
)
from nanobanana_queue.workers.settings import ConfigError, load_settings
from tests.support.procs import free_port
from tests.support.redis_server import RedisServer

URL = "sentinel://h1:26379;sentinel://h2:26380;sentinel://h3/2"


def test_a_sentinel_url_names_every_sentinel_with_kombus_default_port_and_the_database() -> None:
    parsed = parse_sentinel_url(URL)
    assert parsed.sentinels == (("h1", 26379), ("h2", 26380), ("h3", 26379))
    assert parsed.db == 2
    assert parsed.password is None


def test_a_password_in_any_part_is_the_data_nodes_password() -> None:
    parsed = parse_sentinel_url("sentinel://h1;sentinel://:s3cret@h2/0")
    assert parsed.password == "s3cret"


@pytest.mark.parametrize(
    "url",
    [
        "sentinel://h1;redis://h2",
        "sentinel://h1/0;sentinel://h2/1",
        "sentinel://h1/zero",
        "sentinel://;",
    ],
)
def test_a_malformed_sentinel_url_is_refused_at_start_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="NBQ_BROKER_URL"):
        load_settings(broker_url=url)


def test_kombu_gets_the_database_and_password_on_its_first_part() -> None:
    # kombu reads both from the first ';'-separated URL only
    assert kombu_sentinel_url(URL, "pw") == (
        "sentinel://:pw@h1:26379/2;sentinel://h2:26380/2;sentinel://h3:26379/2"
    )


def test_the_celery_config_on_sentinel_names_the_master_and_the_sentinels_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "sentinel-password"
    secret.write_text("sentinel-pw\n")
    monkeypatch.setenv("NBQ_REDIS_SENTINEL_PASSWORD_FILE", str(secret))
    settings = load_settings(broker_url=URL, redis_sentinel_master="prod")
    config = celery_config(settings)
    options = config["broker_transport_options"]
    assert options["master_name"] == "prod"
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"
    assert options["visibility_timeout"] == settings.visibility_timeout_s
    # publishes keep retrying across a failover (the default gives up within a second)
    policy = config["task_publish_retry_policy"]
    assert policy["max_retries"] * policy["interval_max"] >= settings.redis_failover_timeout_s
    assert "broker_use_ssl" not in config


def test_sentinel_tls_turns_on_tls_for_the_broker_and_the_sentinels() -> None:
    settings = load_settings(broker_url=URL, redis_sentinel_tls=True, redis_tls_ca_file="/ca.pem")
    config = celery_config(settings)
    assert config["broker_use_ssl"]["ssl_ca_certs"] == "/ca.pem"
    assert config["broker_transport_options"]["sentinel_kwargs"]["ssl"] is True


def test_each_sentinel_is_asked_once_the_failover_retry_repeats_the_discovery() -> None:
    # redis-py's default retried one unreachable sentinel for seconds before the next
    settings = load_settings(broker_url=URL)
    retry = celery_config(settings)["broker_transport_options"]["sentinel_kwargs"]["retry"]
    assert retry.get_retries() == 0
    pool = redis_client(settings).connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    manager = pool.sentinel_manager
    assert all(s.get_retry().get_retries() == 0 for s in manager.sentinels)


def test_no_master_found_names_each_sentinel_and_why_it_failed() -> None:
    # redis-py alone reports only the error's class ("network:ConnectionError")
    port = free_port()
    settings = load_settings(
        broker_url=f"sentinel://127.0.0.1:{port}/0", redis_failover_timeout_s=0.3
    )
    with pytest.raises(redis.ConnectionError, match=f"sentinel 127.0.0.1:{port}: .*refused"):
        redis_client(settings).ping()


def test_a_plain_redis_url_keeps_the_plain_celery_config() -> None:
    config = celery_config(load_settings(broker_url="redis://127.0.0.1:6379/0"))
    assert config["broker_url"] == "redis://127.0.0.1:6379/0"
    assert "master_name" not in config["broker_transport_options"]


def test_the_store_client_on_sentinel_follows_the_named_master_with_the_secret_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NBQ_REDIS_PASSWORD", "data-pw")
    settings = load_settings(broker_url=URL, redis_sentinel_master="prod")
    client = redis_client(settings)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "prod"
    assert pool.connection_kwargs["password"] == "data-pw"
    assert pool.connection_kwargs["db"] == 2
    retry = pool.connection_kwargs["retry"]
    assert retry.get_retries() * 0.25 >= settings.redis_failover_timeout_s


def test_a_plain_url_gets_the_password_setting_only_when_it_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NBQ_REDIS_PASSWORD", "setting-pw")
    settings = load_settings()
    assert redis_client(settings, "redis://h:1/0").connection_pool.connection_kwargs[
        "password"
    ] == ("setting-pw")
    assert redis_client(settings, "redis://:url-pw@h:1/0").connection_pool.connection_kwargs[
        "password"
    ] == ("url-pw")


# -- retried scripts ---------------------------------------------------------------------


@pytest.fixture
def store(redis_server: RedisServer) -> JobStore:
    return JobStore(redis_server.client(), prefix="t")


def _freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same call re-sent (its reply lost): same stamp, same arguments."""
    frozen = time.time()
    monkeypatch.setattr(time, "time", lambda: frozen)


def test_a_retried_transition_reports_applied_and_applies_once(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create(JobRecord(job_id="j1"))
    _freeze(monkeypatch)
    first = store.apply(lifecycle.CLAIM_SUBMIT, "j1")  # attempts + 1
    again = store.apply(lifecycle.CLAIM_SUBMIT, "j1")
    assert first[1] and again[1]
    assert again[0] is not None and again[0].attempts == 1
    counts = store.redis.hgetall(store.state_counter_key)
    assert counts[b'["submitting"]'] == b"1"


def test_a_retried_create_reports_created_once(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _freeze(monkeypatch)
    assert store.create(JobRecord(job_id="j2"))[1]
    assert store.create(JobRecord(job_id="j2"))[1]
    assert store.redis.hgetall(store.state_counter_key)[b'["queued"]'] == b"1"
    monkeypatch.undo()
    assert not store.create(JobRecord(job_id="j2"))[1]  # a different call: a duplicate id


def test_a_different_caller_still_loses_a_transition_already_made(store: JobStore) -> None:
    store.create(JobRecord(job_id="j3"))
    assert store.apply(lifecycle.CLAIM_SUBMIT, "j3")[1]
    assert not store.apply(lifecycle.CLAIM_SUBMIT, "j3")[1]


def test_wait_replicas_without_a_replica_goes_on_after_the_timeout(
    redis_server: RedisServer,
) -> None:
    store = JobStore(redis_server.client(), prefix="t", wait_replicas=1, wait_timeout_ms=50)
    _, created = store.create(JobRecord(job_id="j4"))
    assert created and store.get("j4") is not None
    _, applied = store.apply(lifecycle.CLAIM_SUBMIT, "j4", durable=True)
    assert applied
