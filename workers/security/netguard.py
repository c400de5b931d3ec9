"""Connect-time guard for untrusted fetches: resolve once, check every address, connect to it.

Checking a URL's host and then letting the HTTP library resolve it again leaves a
DNS-rebinding gap (public answer for the check, 127.0.0.1 for the connect). Here the
check sits *inside* httpcore's network backend, the one place that opens sockets:

    httpx.Client ─ GuardedTransport (httpx.HTTPTransport) ─ httpcore.ConnectionPool
                                                          └ GuardedBackend.connect_tcp
                                                              getaddrinfo(host) once
                                                              every address checked
                                                              inner.connect_tcp(<checked IP>)

TLS is untouched: httpcore starts TLS with ``server_hostname`` = the URL's host (or the
``sni_hostname`` extension), so SNI and certificate checks still use the name.

Every socket operation is also bounded by the caller's deadline (``deadline_scope``), so a
server that trickles bytes cannot stretch a download past its total time budget.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from http.cookiejar import CookieJar, CookiePolicy
from typing import Any

import httpcore
import httpx

from nanobanana_queue.workers.errors import UnsafeUrlError
from nanobanana_queue.workers.security.addresses import IPAddress, address_problem
from nanobanana_queue.workers.security.urlguard import UrlPolicy

__all__ = [
    "GuardedBackend",
    "GuardedTransport",
    "check_addresses",
    "deadline_scope",
    "guarded_client",
    "resolve",
]

_DEADLINE: ContextVar[float | None] = ContextVar("nbq_fetch_deadline", default=None)


@contextmanager
def deadline_scope(deadline_monotonic: float) -> Iterator[None]:
    """Bound every guarded socket operation in this context by ``time.monotonic()`` value."""
    token = _DEADLINE.set(deadline_monotonic)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _bounded(timeout: float | None, on_expiry: type[Exception]) -> float | None:
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise on_expiry("the download deadline has passed")
    return remaining if timeout is None else min(timeout, remaining)


def resolve(host: str, port: int) -> list[IPAddress]:
    """All addresses ``host`` resolves to, in resolver order, without duplicates.

    DNS failure is a connection failure (retryable), not a refusal.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: no addresses")
    return addresses


def check_addresses(host: str, addresses: Iterable[IPAddress], policy: UrlPolicy) -> None:
    """Refuse unless *every* address is public, or ``host`` is opted in through
    ``NBQ_RESULT_URL_PRIVATE_HOSTS`` and the non-public ones are of a listable kind
    (loopback, private) — never link-local. An allowlist entry alone never exempts."""
    explicit = policy.may_be_private(host)
    for address in addresses:
        problem = address_problem(address)
        if problem is None or (problem.listable and explicit):
            continue
        hint = "" if explicit or not problem.listable else " (not in NBQ_RESULT_URL_PRIVATE_HOSTS)"
        raise UnsafeUrlError(
            f"result host {host!r} resolves to {address}, a {problem.reason}{hint}; refused"
        )


class _DeadlineStream(httpcore.NetworkStream):
    """Delegates to the real stream, shrinking each timeout to the time left."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that only ever connects to addresses it has checked."""

    def __init__(self, policy: UrlPolicy, inner: httpcore.NetworkBackend | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve(host, port)
        check_addresses(host, addresses, self.policy)
        options = list(socket_options or [])
        last_error: Exception | None = None
        for address in addresses:  # like socket.create_connection, but only checked IPs
            try:
                stream = self._inner.connect_tcp(
                    str(address),  # a literal: the inner backend cannot re-resolve it
                    port,
                    timeout=_bounded(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream)
        assert last_error is not None
        raise last_error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise UnsafeUrlError("unix sockets are never used for untrusted fetches")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@functools.lru_cache(maxsize=1)
def default_ssl_context() -> ssl.SSLContext:
    """One verifying context per process: building one loads the CA bundle (~15-30 ms of
    CPU), which was a third of a download's cost when done per fetch. Contexts are
    thread-safe for wrapping sockets."""
    return httpx.create_ssl_context(verify=True, trust_env=False)


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool uses ``GuardedBackend``.

    Subclassing keeps httpx's own request/response conversion and exception mapping;
    the only private detail used is the ``_pool`` attribute, which a test pins down.
    No proxies: a proxy would be the one connecting, out of the guard's sight.
    """

    def __init__(
        self,
        policy: UrlPolicy,
        *,
        inner: httpcore.NetworkBackend | None = None,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 10,
    ) -> None:
        ssl_context = (
            default_ssl_context()
            if verify is True
            else httpx.create_ssl_context(verify=verify, trust_env=False)
        )
        super().__init__(verify=ssl_context, trust_env=False)
        self.backend = GuardedBackend(policy, inner)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=self.backend,
        )


class _NoCookies(CookiePolicy):
    """A shared client must not carry one result host's cookies into the next fetch."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        return False


def guarded_client(
    policy: UrlPolicy,
    *,
    inner: httpcore.NetworkBackend | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Client:
    """An ``httpx.Client`` for untrusted URLs: guarded sockets, no env proxies, no
    redirects followed automatically, no cookies kept. Reusable across fetches."""
    return httpx.Client(
        transport=GuardedTransport(policy, inner=inner, verify=verify),
        trust_env=False,
        follow_redirects=False,
        cookies=CookieJar(policy=_NoCookies()),
    )
