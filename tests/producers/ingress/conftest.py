"""An in-process ingress on a real Redis (the session server, a db of its own, a fresh key
prefix per test) and the session S3 server; no workers run, so nothing is submitted."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.ingress.app import create_app
from nanobanana_queue.workers.app import create_app as create_celery_app
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings, load_settings
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server

TOKENS = {"alice": "alice-token-123", "bob": "bob-token-456"}
SECRET = "callback-secret-for-tests"
#: The database of the session redis-server these tests use.
DB = 7


def auth(producer: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[producer]}"}


class Ingress:
    """The app under test, its settings and handles to look behind it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = Producer(
            settings,
            celery_app=create_celery_app(settings),
            runtime=Runtime.from_settings(settings),
        )
        self.app = create_app(settings, producer=self.producer)
        self.client = TestClient(self.app, raise_server_exceptions=False)

    @property
    def store(self) -> JobStore:
        return self.producer.runtime.store

    @property
    def redis(self) -> redis.Redis:
        return self.producer.runtime.redis

    def job_count(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(f"{self.settings.key_prefix}:job:*"))

    def queued_messages(self, queue: str) -> int:
        broker = redis.Redis.from_url(self.settings.broker_url)
        return int(broker.llen(queue))


def ingress_settings(redis_url: str, s3: S3Server, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "broker_url": redis_url,
        "key_prefix": f"t{uuid.uuid4().hex[:10]}",
        "ingress_tokens": ",".join(f"{p}:{t}" for p, t in TOKENS.items()),
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "s3_bucket": s3.bucket,
        "s3_region": s3.region,
        "evolink_api_key": "unused",
        "public_callback_url": "https://ingress.example.com",
        "callback_secret": SECRET,
        **overrides,
    }
    return load_settings(**values)


@pytest.fixture
def make_ingress(
    session_redis: RedisServer, session_s3: S3Server
) -> Iterator[Callable[..., Ingress]]:
    """Build an ingress with settings overrides (each on a fresh broker queue set)."""
    url = f"redis://127.0.0.1:{session_redis.port}/{DB}"
    redis.Redis.from_url(url).flushdb()
    made: list[Ingress] = []

    def make(**overrides: Any) -> Ingress:
        ingress = Ingress(ingress_settings(url, session_s3, **overrides))
        made.append(ingress)
        return ingress

    yield make
    for ingress in made:
        ingress.client.close()


@pytest.fixture
def ingress(make_ingress: Callable[..., Ingress]) -> Ingress:
    return make_ingress()
