"""Over real HTTP (the emulator as a process): dropped connections, delays, callbacks, CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.emulator_server import EmulatorServer
from tests.support.procs import free_port, port_open, python_exe, start, stop, wait_until

BODY = {"model": "nano-banana-2-beta", "prompt": "a lighthouse at dusk", "quality": "1K"}


class Receiver:
    """A tiny callback endpoint: answers the queued statuses in order, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=secret"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def emu(session_emulator: EmulatorServer) -> EmulatorServer:
    session_emulator.reset()
    return session_emulator


def _create(emu: EmulatorServer, **fields) -> httpx.Response:
    return httpx.post(
        f"{emu.url}/v1/images/generations", json={**BODY, **fields}, headers=emu.auth_headers,
        timeout=10, trust_env=False,
    )  # fmt: skip


def _wait_final(emu: EmulatorServer, task_id: str) -> dict[str, Any]:
    def final() -> bool:
        return emu.task(task_id)["status"] in ("completed", "failed")

    wait_until(final, timeout_s=20, what="task end")
    return emu.task(task_id)


def test_create_query_and_download_over_http(emu):
    task_id = _create(emu).json()["id"]
    task = _wait_final(emu, task_id)["view"]
    image = httpx.get(task["results"][0], trust_env=False)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert task["results"][0].startswith(emu.url)
    stats = emu.stats()
    assert (stats["creates_accepted"], stats["file_downloads"]) == (1, 1)


def test_drop_connection_closes_without_an_answer_and_creates_nothing(emu):
    emu.add_fault(endpoint="create", action="drop_connection", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        _create(emu)
    assert emu.stats()["tasks_total"] == 0
    assert _create(emu).status_code == 200


def test_drop_after_create_leaves_a_charged_task_behind(emu):
    emu.set_credits(10)
    emu.add_fault(endpoint="create", action="drop_after_create", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        _create(emu)
    stats = emu.stats()
    assert (stats["tasks_total"], stats["credits"]) == (1, 8.4)


def test_delay_exceeds_a_client_read_timeout_and_the_task_is_still_created(emu):
    emu.add_fault(endpoint="create", action="delay", seconds=1.0, count=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{emu.url}/v1/images/generations", json=BODY, headers=emu.auth_headers,
                   timeout=httpx.Timeout(10, read=0.2), trust_env=False)  # fmt: skip
    wait_until(lambda: emu.stats()["tasks_total"] == 1, timeout_s=10, what="delayed create")


def test_query_drop_connection(emu):
    task_id = _create(emu).json()["id"]
    emu.add_fault(endpoint="query", action="drop_connection", task_id=task_id, count=1)
    url = f"{emu.url}/v1/tasks/{task_id}"
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url, headers=emu.auth_headers, trust_env=False)
    assert httpx.get(url, headers=emu.auth_headers, trust_env=False).status_code == 200


def test_callback_is_delivered_with_the_final_task_object(emu, receiver):
    task_id = _create(emu, callback_url=receiver.url).json()["id"]

    wait_until(lambda: emu.task(task_id)["callback_state"] == "delivered", timeout_s=20,
               what="callback")  # fmt: skip

    assert len(receiver.bodies) == 1
    delivered = receiver.bodies[0]
    assert (delivered["id"], delivered["status"]) == (task_id, "completed")
    assert delivered["results"]
    assert emu.stats()["callbacks"]["delivered"] == 1


def test_callback_is_retried_after_failures(emu, receiver):
    receiver.statuses = [500, 503]
    task_id = _create(emu, callback_url=receiver.url).json()["id"]

    wait_until(lambda: emu.task(task_id)["callback_state"] == "delivered", timeout_s=20,
               what="callback")  # fmt: skip

    deliveries = emu.task(task_id)["callback_deliveries"]
    assert [d["status_code"] for d in deliveries] == [500, 503, 200]
    assert deliveries[1]["at"] - deliveries[0]["at"] >= 0.01  # 1 s scaled by 0.01
    assert len(receiver.bodies) == 3
    assert emu.stats()["callbacks"]["sent"] == 3


def test_callback_gives_up_after_three_retries(emu, receiver):
    receiver.statuses = [500] * 10
    task_id = _create(emu, callback_url=receiver.url).json()["id"]

    wait_until(lambda: emu.task(task_id)["callback_state"] == "failed", timeout_s=20,
               what="callback")  # fmt: skip

    assert len(receiver.bodies) == 4
    assert emu.stats()["callbacks"]["failed"] == 1


def test_failed_task_callback_carries_the_error(emu, receiver):
    emu.add_fault(endpoint="create", action="fail_task", code="generation_timeout", count=1)
    task_id = _create(emu, callback_url=receiver.url).json()["id"]
    wait_until(lambda: receiver.bodies, timeout_s=20, what="callback")
    assert receiver.bodies[0]["status"] == "failed"
    assert receiver.bodies[0]["error"]["code"] == "generation_timeout"
    assert _wait_final(emu, task_id)["status"] == "failed"


def test_callback_drop_fault_delivers_nothing(emu, receiver):
    emu.add_fault(endpoint="callback", action="drop", count=1)
    task_id = _create(emu, callback_url=receiver.url).json()["id"]
    wait_until(lambda: emu.task(task_id)["callback_state"] == "dropped", timeout_s=20,
               what="dropped callback")  # fmt: skip
    assert receiver.bodies == []
    assert emu.stats()["callbacks"]["dropped"] == 1


def test_non_loopback_callbacks_are_never_sent(emu):
    task_id = _create(emu, callback_url="https://hooks.example.com/cb").json()["id"]
    wait_until(lambda: emu.task(task_id)["callback_state"] == "skipped", timeout_s=20,
               what="skipped callback")  # fmt: skip
    assert emu.stats()["callbacks"]["sent"] == 0


def test_large_file_streams_over_http_without_holding_it(emu):
    task_id = _create(emu).json()["id"]
    url = _wait_final(emu, task_id)["view"]["results"][0]
    emu.add_fault(endpoint="file", action="large_file", bytes=20_000_000, count=1)
    with httpx.stream("GET", url, trust_env=False) as response:
        assert response.headers["content-length"] == str(33 + 20_000_000)
        total = sum(len(chunk) for chunk in response.iter_bytes())
    assert total == 33 + 20_000_000


@pytest.mark.integration  # starts nbq emulator
def test_nbq_emulator_command_serves_the_api(tmp_path):
    port = free_port()
    proc = start([python_exe(), "-m", "nanobanana_queue.producers.cli.main", "emulator",
                  "--port", str(port),
                  "--time-scale", "0.01", "--api-key", "k"], log=tmp_path / "nbq.log")  # fmt: skip
    try:
        wait_until(lambda: port_open(port), timeout_s=30, what="nbq emulator")
        response = httpx.post(f"http://127.0.0.1:{port}/v1/images/generations", json=BODY,
                              headers={"Authorization": "Bearer k"}, trust_env=False)  # fmt: skip
        assert response.status_code == 200
        assert response.json()["task_info"]["estimated_time"] == 1  # 0.2 s, whole seconds up
        assert response.headers["X-Emulator-Estimated-Time"] == "0.2"
    finally:
        stop(proc)


def test_factory_passes_extra_options(emulator_factory):
    emu = emulator_factory("--credits", "2", "--image-format", "webp")
    created = _create(emu)  # 1K costs 1.6
    assert created.status_code == 200
    assert _create(emu).status_code == 402
    task = _wait_final(emu, created.json()["id"])
    assert task["view"]["results"][0].split("?")[0].endswith(".webp")
