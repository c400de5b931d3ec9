"""A real HTTP receiver on loopback for webhook tests: records every try, verifies none.

Tests verify the recorded deliveries with the ``standardwebhooks`` library themselves
(a receiver's point of view, not our code). ``answers`` scripts the replies: each
``(status, headers)`` is used once, in order, then every try gets 204.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nanobanana_queue.devstack.procs import free_port


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic, when it arrived
    status: int  # what the receiver answered


@dataclass
class WebhookReceiver:
    port: int = field(default_factory=free_port)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    status, headers = receiver.answers.pop(0) if receiver.answers else (204, {})
                    receiver.deliveries.append(
                        Delivery(
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                            status,
                        )
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if 200 <= d.status < 300]
