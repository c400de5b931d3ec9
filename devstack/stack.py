"""The dev stack: Redis, S3, the API (emulator or real), one worker and Flower.

Started in dependency order into a temp dir (data and logs), stopped in reverse order;
the temp dir goes with it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from nanobanana_queue.devstack import emulator_service, redis_service, s3_service
from nanobanana_queue.devstack.config import DEV_TIMING, KEY_PLACEHOLDER, DevEnv, redact_url
from nanobanana_queue.devstack.errors import StartupError
from nanobanana_queue.devstack.procs import Supervisor, free_port, port_open
from nanobanana_queue.workers.contract import DECLARED_QUEUES
from nanobanana_queue.workers.settings import Settings

#: ``nbq`` run by this interpreter: every part of the stack is one of its commands.
NBQ = [sys.executable, "-m", "nanobanana_queue.producers.cli.main"]

#: Offsets from ``--port-base``: one port per service, in this order.
PORT_OFFSETS = {"redis": 0, "s3": 1, "emulator": 2, "flower": 3, "metrics": 4}
#: Seconds the worker and Flower get to answer (Celery's imports are slow on a busy host).
APP_START_TIMEOUT_S = 90.0
WORKER_CONCURRENCY = 4


@dataclass(frozen=True)
class Service:
    """One running part of the stack, as printed to the user."""

    name: str
    url: str
    note: str = ""


class DevStack:
    """Start with :meth:`start`, always end with :meth:`stop` (safe to call twice)."""

    def __init__(
        self,
        user: Settings,
        base_env: Mapping[str, str],
        *,
        port_base: int | None = None,
        redis_search_path: str | None = None,
        on_ready: Callable[[Service], None] | None = None,
    ) -> None:
        self.user = user
        self.env = DevEnv(user)
        self.port_base = port_base
        self.redis_search_path = redis_search_path
        self.on_ready = on_ready or (lambda service: None)
        self.services: list[Service] = []
        self.dir = Path(tempfile.mkdtemp(prefix="nbq-dev-"))
        self.supervisor = Supervisor(log_dir=self.dir, env=dict(base_env))
        self.worker_name = f"nbq-dev-{os.getpid()}@{socket.gethostname()}"

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.start_redis()
        self._start_s3()
        self._start_api()
        self._start_worker()
        self._start_flower()
        self._start_metrics()

    def stop(self) -> None:
        """Stop every child (newest first) and remove the temp dir."""
        self.supervisor.stop_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def check(self) -> None:
        """Raise :class:`ChildExitedError` if a part of the stack died."""
        self.supervisor.check_alive()

    def settings(self) -> Settings:
        return self.env.settings()

    # --- parts ---------------------------------------------------------------------------

    def _port(self, service: str) -> int:
        if self.port_base is None:
            return free_port()
        port = self.port_base + PORT_OFFSETS[service]
        if port_open(port):
            raise StartupError(
                f"port {port} (for {service}, --port-base {self.port_base}) is already in use"
            )
        return port

    def _ready(self, service: Service) -> None:
        self.services.append(service)
        self.on_ready(service)

    def start_redis(self) -> None:
        """The configured Redis if set and answering, else a private redis-server."""
        url = self.user.broker_url
        if "broker_url" in self.user.model_fields_set and redis_service.ping(url):
            self.env.show("NBQ_BROKER_URL", redact_url(url))
            if self.user.redis_url:
                self.env.show("NBQ_REDIS_URL", redact_url(self.user.redis_url))
            self._ready(Service("redis", redact_url(url), "configured in NBQ_BROKER_URL"))
            return
        binary = redis_service.redis_server_binary(self.redis_search_path)
        url = redis_service.start_redis(
            self.supervisor, port=self._port("redis"), data_dir=self.dir / "redis", binary=binary
        )
        self.env.set("NBQ_BROKER_URL", url)
        self.env.set("NBQ_REDIS_URL", url)
        # The private Redis keeps nothing across a restart (a throwaway dev store): the
        # workers and producers it serves must be told to accept that.
        self.env.set("NBQ_ALLOW_VOLATILE_STORE", "true")
        self._ready(
            Service(
                "redis",
                url,
                f"started {binary}; VOLATILE: no persistence, a restart loses every job "
                "(NBQ_ALLOW_VOLATILE_STORE=true)",
            )
        )

    def _start_s3(self) -> None:
        if "s3_endpoint" in self.user.model_fields_set:
            for name in ("endpoint", "bucket"):
                self.env.show(f"NBQ_S3_{name.upper()}", str(getattr(self.user, f"s3_{name}")))
            self.env.show("NBQ_S3_ACCESS_KEY", "<your S3 access key>")
            self.env.show("NBQ_S3_SECRET_KEY", "<your S3 secret key>")
            scheme = "https" if self.user.s3_secure else "http"
            self._ready(
                Service(
                    "s3", f"{scheme}://{self.user.s3_endpoint}", "configured in NBQ_S3_ENDPOINT"
                )
            )
            return
        port = self._port("s3")
        self.env.set("NBQ_S3_ENDPOINT", f"127.0.0.1:{port}")
        self.env.set("NBQ_S3_ACCESS_KEY", "nbq-dev")
        self.env.set("NBQ_S3_SECRET_KEY", f"dev-{secrets.token_hex(8)}")
        self.env.set("NBQ_S3_SECURE", "false")
        self.env.set("NBQ_S3_BUCKET", self.user.s3_bucket)
        self.env.set("NBQ_S3_REGION", self.user.s3_region)
        url = s3_service.start_s3(self.supervisor, port=port, settings=self.settings())
        self._ready(Service("s3", url, f"moto, bucket {self.user.s3_bucket}"))

    def _start_api(self) -> None:
        if emulator_service.uses_real_api(self.user):
            self.env.show("NBQ_EVOLINK_BASE_URL", self.user.evolink_base_url)
            self.env.show("NBQ_EVOLINK_API_KEY", KEY_PLACEHOLDER)
            self._ready(Service("api", self.user.evolink_base_url, "real Evolink API"))
            return
        key = f"dev-{secrets.token_hex(8)}"
        url = emulator_service.start_emulator(
            self.supervisor, port=self._port("emulator"), api_key=key
        )
        self.env.set("NBQ_EVOLINK_BASE_URL", url)
        self.env.set("NBQ_EVOLINK_API_KEY", key)
        # The URL guard stays on: the emulator's loopback host is opted in explicitly.
        self.env.set("NBQ_RESULT_URL_PRIVATE_HOSTS", "127.0.0.1")
        self.env.set("NBQ_RESULT_URL_ALLOW_HTTP", "true")
        for variable, value in DEV_TIMING.items():
            self.env.set_default(variable, value)
        self._ready(
            Service(
                "emulator",
                url,
                f"time scale {emulator_service.TIME_SCALE:g}; images capped at "
                f"{emulator_service.MAX_PIXELS:,} pixels, so 2K/4K come back small",
            )
        )

    def _start_worker(self) -> None:
        queues = ",".join(DECLARED_QUEUES)
        child = self.supervisor.start("worker", [
            *NBQ, "worker", "--queues", queues,
            "--pool", "threads", "--concurrency", str(WORKER_CONCURRENCY),
            "--hostname", self.worker_name, "--loglevel", "INFO",
        ], extra_env=self.env.values)  # fmt: skip
        from nanobanana_queue.workers.app import create_app

        app = create_app(self.settings())

        def answers() -> bool:
            return bool(app.control.ping(destination=[self.worker_name], timeout=0.5))

        try:
            self.supervisor.wait_ready(child, answers, timeout_s=APP_START_TIMEOUT_S)
        finally:
            app.close()
        self._ready(
            Service(
                "worker",
                self.worker_name,
                f"queues {queues}, {WORKER_CONCURRENCY} threads, log {child.log}",
            )
        )

    def _start_flower(self) -> None:
        port = self._port("flower")
        url = f"http://127.0.0.1:{port}"
        # --no-auth is safe only because Flower listens on loopback.
        child = self.supervisor.start("flower", [
            *NBQ, "flower", "--address", "127.0.0.1",
            "--port", str(port), "--no-auth",
        ], extra_env=self.env.values)  # fmt: skip

        def healthy() -> bool:
            response = httpx.get(f"{url}/healthcheck", timeout=1.0, trust_env=False)
            return response.status_code == 200

        self.supervisor.wait_ready(child, healthy, timeout_s=APP_START_TIMEOUT_S)
        self._ready(Service("flower", url, "no auth, loopback only"))

    def _start_metrics(self) -> None:
        """``nbq metrics``: the exact project totals (what Prometheus would scrape)."""
        port = self._port("metrics")
        url = f"http://127.0.0.1:{port}/metrics"
        child = self.supervisor.start("metrics", [
            *NBQ, "metrics", "--address", "127.0.0.1",
            "--port", str(port),
        ], extra_env=self.env.values)  # fmt: skip

        def serving() -> bool:
            return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200

        self.supervisor.wait_ready(child, serving, timeout_s=APP_START_TIMEOUT_S)
        self._ready(Service("metrics", url, "nbq metrics, Prometheus text"))

    @property
    def s3_is_ephemeral(self) -> bool:
        """True when S3 is the stack's own moto server: objects live in its memory."""
        return "s3_endpoint" not in self.user.model_fields_set
