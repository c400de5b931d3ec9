"""``nbq`` in-process (typer's runner) on a real Redis: fast enough for one test per rough
edge a person at the terminal meets. Each test gets its own key prefix on the session's
redis-server, so tests never see each other's jobs."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from typer.testing import CliRunner

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers.settings import Settings
from tests.support.redis_server import RedisServer

_prefixes = itertools.count()


@dataclass
class Result:
    """What a person sees: the exit status, stdout, stderr (and any uncaught exception)."""

    code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def traceback_free(self) -> bool:
        return "Traceback" not in self.stdout + self.stderr and (
            self.exception is None or isinstance(self.exception, SystemExit)
        )


@dataclass
class Nbq:
    """Runs ``nbq ARGS`` in this process with ``env`` (NBQ_* from the test only)."""

    env: dict[str, str]
    columns: int = 80
    overrides: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Result:
        from nanobanana_queue.producers.cli.main import app
        from nanobanana_queue.workers.runtime import reset_runtime
        from nanobanana_queue.workers.settings import get_settings
        from nanobanana_queue.workers.startup import configure_process

        # Logging is configured once per process, to the stderr of that moment: make it
        # pytest's, never the runner's (closed after the call; later tests would log into it).
        configure_process(Settings(broker_url="redis://127.0.0.1:1/0"))

        clean = {k: None for k in os.environ if k.startswith("NBQ_")}
        merged: dict[str, str | None] = {
            **clean, **self.env, "COLUMNS": str(self.columns), **env
        }  # fmt: skip
        get_settings.cache_clear()
        reset_runtime()
        try:
            done = CliRunner().invoke(app, list(args), env=merged, input=input)
        finally:
            get_settings.cache_clear()
            reset_runtime()
        return Result(done.exit_code, done.stdout, done.stderr, done.exception)


@pytest.fixture
def redis_env(session_redis: RedisServer) -> dict[str, str]:
    return {
        "NBQ_BROKER_URL": session_redis.url,
        "NBQ_KEY_PREFIX": f"cli{os.getpid()}x{next(_prefixes)}",
        "NBQ_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def nbq(redis_env: dict[str, str]) -> Nbq:
    return Nbq(redis_env)


def settings_for(env: dict[str, str]) -> Settings:
    """The settings ``nbq`` reads from ``env`` (NBQ_* only)."""
    values: dict[str, Any] = {k[4:].lower(): v for k, v in env.items() if k.startswith("NBQ_")}
    return Settings(**values)


@pytest.fixture
def producer_for(redis_env: dict[str, str]) -> Iterator[Callable[[], Producer]]:
    """A Python-API producer on the same Redis and prefix as ``nbq``."""
    made: list[Producer] = []

    def make() -> Producer:
        made.append(Producer(settings_for(redis_env)))
        return made[-1]

    yield make
    for producer in made:
        producer.celery.close()


@pytest.fixture(autouse=True)
def _short_worker_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker runs here: the 'no worker answered' broadcast need not wait 0.5 s."""
    monkeypatch.setattr("nanobanana_queue.producers.cli.consumers.PING_TIMEOUT_S", 0.02)
