"""Test doubles for the URL guards: a fake resolver and a backend that records connects."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import pytest


class FakeDns:
    """Answers for chosen names; everything else must be a numeric literal (no real DNS)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: dict[str, list[str]] = {}
        self.queries: list[str] = []
        self._real = socket.getaddrinfo
        monkeypatch.setattr(
            "nanobanana_queue.workers.security.netguard.socket.getaddrinfo", self.getaddrinfo
        )

    def add(self, name: str, *addresses: str) -> None:
        self.answers[name] = list(addresses)

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        self.queries.append(str(host))
        if host in self.answers:
            infos = []
            for address in self.answers[host]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr: tuple[Any, ...] = (
                    (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
                )
                infos.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return infos
        return self._real(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)


@dataclass
class SpyStream(httpcore.NetworkStream):
    """Pretends to be connected; records the TLS handshake's hostname, then fails it."""

    tls_hostnames: list[str | None] = field(default_factory=list)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        return None

    def close(self) -> None:
        return None

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self.tls_hostnames.append(server_hostname)
        raise httpcore.ConnectError("spy: TLS stops here")


class SpyBackend(httpcore.NetworkBackend):
    """Records every connect attempt; never opens a socket."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []
        self.stream = SpyStream()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        self.connects.append((host, port))
        return self.stream
