"""TLS to Redis, live: a redis-server with only a TLS port and a private CA.

The store client (``rediss://`` + NBQ_REDIS_TLS_CA_FILE) and the broker (kombu with the
``broker_use_ssl`` the Celery config derives) both verify the server against that CA; a
client without the CA is refused by the certificate check, not let through.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kombu.connection import Connection

from nanobanana_queue.workers.app import celery_config
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.redis_client import redis_client
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import load_settings
from tests.support.redis_server import RedisServer
from tests.support.tls import require_tls_redis_binary, write_certificates

pytestmark = pytest.mark.integration


@dataclass
class TlsRedis:
    port: int
    ca_file: Path

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    require_tls_redis_binary()
    tls = write_certificates(tmp_path)
    server = RedisServer(dir=tmp_path, tls=tls)
    server.start()
    try:
        yield TlsRedis(port=server.port, ca_file=tls.ca)
    finally:
        server.stop()


def test_the_job_store_speaks_tls_and_verifies_the_server_against_the_ca(
    tls_redis: TlsRedis,
) -> None:
    settings = load_settings(
        broker_url=tls_redis.url, redis_url=tls_redis.url, redis_tls_ca_file=str(tls_redis.ca_file)
    )
    rt = Runtime.from_settings(settings)
    _, created = rt.store.create(JobRecord(job_id="tls-1", request={"prompt": "a cat"}))
    assert created and rt.store.require("tls-1").request == {"prompt": "a cat"}


def test_without_the_ca_the_certificate_check_refuses_the_connection(
    tls_redis: TlsRedis,
) -> None:
    client = redis_client(load_settings(broker_url=tls_redis.url, redis_url=tls_redis.url))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client.ping()


def test_the_broker_publishes_and_consumes_over_tls_with_the_derived_options(
    tls_redis: TlsRedis,
) -> None:
    settings = load_settings(broker_url=tls_redis.url, redis_tls_ca_file=str(tls_redis.ca_file))
    tls_options = celery_config(settings)["broker_use_ssl"]
    with Connection(settings.broker_url, ssl=tls_options) as conn:
        queue = conn.SimpleQueue("nbq-tls-test")
        queue.put({"job_id": "tls-1"})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    assert message.payload == {"job_id": "tls-1"}
