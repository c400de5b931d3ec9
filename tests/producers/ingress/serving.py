"""Real-process helpers for end-to-end tests through the ingress (``nbq serve``)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from nanobanana_queue.workers.callbacks import callback_token
from tests.support.emulator_server import TEST_ARGS, EmulatorServer
from tests.support.procs import free_port, start, stop, wait_until
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server
from tests.support.stack import Stack

SECRET = "e2e-callback-secret"
TOKEN = "svc-token-e2e"
PRODUCER = "svc"


@dataclass
class IngressServer:
    """``nbq serve`` as a real process, configured like the stack's workers."""

    proc: subprocess.Popen[bytes]
    url: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=10, trust_env=False)

    def callback(
        self, job_id: str, body: dict[str, Any], *, token: str | None = None
    ) -> httpx.Response:
        """Deliver a callback as Evolink would (the valid token unless one is given)."""
        token = callback_token(SECRET, job_id) if token is None else token
        return httpx.post(
            f"{self.url}/v1/callbacks/evolink/{job_id}",
            params={"token": token},
            json=body,
            timeout=10,
            trust_env=False,
        )

    def stop(self) -> None:
        stop(self.proc)


def enable_ingress(stack: Stack) -> int:
    """Point callbacks at a port the ingress will listen on; call before starting workers."""
    port = free_port()
    stack.overrides.update(
        {
            "NBQ_PUBLIC_CALLBACK_URL": f"http://127.0.0.1:{port}",
            "NBQ_CALLBACK_SECRET": SECRET,
            "NBQ_INGRESS_TOKENS": f"{PRODUCER}:{TOKEN}",
        }
    )
    return port


def start_ingress(
    stack: Stack,
    port: int,
    *,
    log_level: str = "warning",
    extra_env: dict[str, str] | None = None,
) -> IngressServer:
    proc = start(
        [
            sys.executable,
            "-m",
            "nanobanana_queue.producers.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            log_level,
        ],
        env={**stack.env(), **(extra_env or {})},
        log=stack.dir / "ingress.log",
    )
    server = IngressServer(proc=proc, url=f"http://127.0.0.1:{port}")

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"nbq serve exited with {proc.returncode}")
        return httpx.get(f"{server.url}/healthz", timeout=1, trust_env=False).status_code == 200

    wait_until(healthy, timeout_s=60, what="nbq serve")
    return server


def slow_stack(
    tmp_path: Path, redis_server: RedisServer, s3: S3Server, *, fixed_duration_s: float
) -> Stack:
    """A stack with its own emulator whose every task takes ``fixed_duration_s`` (nominal)."""
    emulator = EmulatorServer(
        log_dir=tmp_path, args=[*TEST_ARGS, "--fixed-duration", str(fixed_duration_s)]
    )
    emulator.start()
    return Stack(redis=redis_server, s3=s3, emulator=emulator, dir=tmp_path)


def wait_for_state(
    server: IngressServer, job_id: str, states: set[str], timeout_s: float = 60
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        with server.client() as client:
            seen.update(client.get(f"/v1/jobs/{job_id}").json())
        return seen.get("state") in states

    wait_until(reached, timeout_s=timeout_s, interval_s=0.1, what=f"job {job_id} in {states}")
    return seen
