"""Redis Sentinel over TLS, live: a TLS-only master and replica, three TLS-only sentinels
that speak TLS to the data nodes and to each other, certificates from a private CA.

A user sets ``NBQ_BROKER_URL=sentinel://h1:26379;...`` with ``NBQ_REDIS_SENTINEL_TLS=true``
and ``NBQ_REDIS_TLS_CA_FILE``: the job store (redis-py's ``Sentinel``: TLS to the
sentinels through ``sentinel_kwargs``, to the master through the connection options)
and the broker (kombu's Sentinel transport: ``sentinel_kwargs`` in the transport options,
``broker_use_ssl`` for the master) both verify every node against that CA. Without the
CA the certificate check refuses them. The passwords (the data nodes' and the sentinels',
here from ``*_FILE``) show up in no error and no log line.
"""

from __future__ import annotations

import pytest
import redis
from kombu.connection import Connection
from kombu.exceptions import OperationalError
from redis.backoff import NoBackoff
from redis.retry import Retry

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers.app import celery_config, create_app
from nanobanana_queue.workers.contract import QUEUE_SUBMIT
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.redis_client import redis_client
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings, load_settings
from tests.support.emulator_server import EmulatorServer
from tests.support.s3_server import S3Server
from tests.support.sentinel import TLS_DATA_PASSWORD, TLS_SENTINEL_PASSWORD, SentinelGroup
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

SECRETS = (TLS_DATA_PASSWORD, TLS_SENTINEL_PASSWORD)


def _settings(group: SentinelGroup, **overrides: object) -> Settings:
    values: dict[str, object] = {k[4:].lower(): v for k, v in group.env().items()}
    return load_settings(**{**values, "redis_failover_timeout_s": 0.5, **overrides})


def _passwords_from_files(group: SentinelGroup, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The group's env with both passwords given as ``*_FILE`` (as a secret store mounts
    them), set in this process too so that in-process settings read the same files."""
    env = group.env()
    for name in ("NBQ_REDIS_PASSWORD", "NBQ_REDIS_SENTINEL_PASSWORD"):
        path = group.dir / name.lower()
        path.write_text(env.pop(name) + "\n")
        env[f"{name}_FILE"] = str(path)
        monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(f"{name}_FILE", str(path))
    return env


def _messages_waiting(group: SentinelGroup, queue: str) -> int:
    """LLEN of kombu's list for ``queue`` on the master, read directly over TLS."""
    return int(group.master.client().llen(queue))


def test_a_producer_enqueues_and_the_store_reads_and_writes_through_tls_sentinels(
    tls_sentinel_group: SentinelGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = tls_sentinel_group
    env = _passwords_from_files(group, monkeypatch)
    settings = load_settings(**{k[4:].lower(): v for k, v in env.items() if "PASSWORD" not in k})
    assert settings.redis_password is not None, "read from NBQ_REDIS_PASSWORD_FILE"

    runtime = Runtime.from_settings(settings)
    _, created = runtime.store.create(JobRecord(job_id="stls-1", request={"prompt": "a cat"}))
    assert created and runtime.store.require("stls-1").request == {"prompt": "a cat"}

    producer = Producer(settings, celery_app=create_app(settings), runtime=runtime)
    job = producer.enqueue({"prompt": "a dog", "quality": "1K"})

    assert producer.status(job.job_id).state is JobState.QUEUED
    assert _messages_waiting(group, QUEUE_SUBMIT) == 1, "the message reached the master"


def test_without_the_ca_the_store_and_the_broker_are_refused_and_no_secret_is_shown(
    tls_sentinel_group: SentinelGroup,
) -> None:
    settings = _settings(tls_sentinel_group, redis_tls_ca_file=None)

    with pytest.raises(redis.ConnectionError) as store_refusal:
        redis_client(settings).ping()

    config = celery_config(settings)
    with (
        Connection(
            config["broker_url"],
            ssl=config["broker_use_ssl"],
            transport_options=config["broker_transport_options"],
        ) as conn,
        pytest.raises(OperationalError) as broker_refusal,
    ):
        conn.ensure_connection(max_retries=1)

    # the store's error says why (redis-py alone says "network:ConnectionError")
    assert "certificate verify failed" in str(store_refusal.value)
    assert "No master found" in str(broker_refusal.value)
    for refusal in (store_refusal, broker_refusal):
        shown = f"{refusal.value!s} {refusal.value!r} {refusal.getrepr()}"
        assert [s for s in SECRETS if s in shown] == []


def test_a_celery_worker_consumes_through_the_tls_sentinel_broker_and_logs_no_secret(
    tls_sentinel_group: SentinelGroup,
    session_s3: S3Server,
    session_emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    group = tls_sentinel_group
    session_emulator.reset()
    stack = Stack(
        redis=group.master,
        s3=session_s3,
        emulator=session_emulator,
        dir=group.dir,
        overrides=_passwords_from_files(group, monkeypatch),
    )
    try:
        stack.start_worker(concurrency=2)
        producer = stack.producer()
        jobs = [producer.enqueue({"prompt": f"tls {n}", "quality": "1K"}) for n in range(3)]
        job_ids = [job.job_id for job in jobs]

        records = stack.wait_all(producer, job_ids, timeout_s=60)

        assert {r.state for r in records.values()} == {JobState.STORED}
    finally:
        stack.stop_workers()
    logs = stack.worker_logs()
    assert "sentinel://" in logs, "the worker logged its broker (masked)"
    assert [s for s in SECRETS if s in logs] == []


def test_the_sentinels_and_the_data_nodes_refuse_plain_connections(
    tls_sentinel_group: SentinelGroup,
) -> None:
    """The setup above is TLS only: nothing here passed for lack of TLS on the wire."""
    group = tls_sentinel_group
    for port in (*group.sentinel_ports, group.master.port, group.replica.port):
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            redis.Redis(port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0)).ping()


def test_the_store_follows_a_failover_the_sentinels_agree_on_over_tls(
    tls_sentinel_group: SentinelGroup,
) -> None:
    """The sentinels vote over TLS too: the replica is promoted and the store follows."""
    group = tls_sentinel_group
    store = redis_client(_settings(group, redis_failover_timeout_s=30.0))
    store.set("before", "1")
    assert store.wait(1, 5000) == 1, "the replica has it"

    group.kill_master()
    group.wait_failover()

    store.set("after", "2")
    assert store.mget("before", "after") == [b"1", b"2"]
    assert group.replica.client().get("after") == b"2", "written on the promoted replica"
