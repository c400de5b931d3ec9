"""uvicorn, configured for the open internet: every limit set on purpose.

The callback route needs no bearer token, so anyone can open connections. uvicorn's own
defaults hold a connection forever while its headers trickle in (its keep-alive timer
stops at the first byte) and accept any number of connections. Here:

* headers must be complete within ``NBQ_INGRESS_HEADER_TIMEOUT_S`` of the connection or,
  on a kept-alive connection, of the request's first byte; otherwise the connection is
  closed (:class:`HeaderDeadlineProtocol`);
* the body must be complete within ``NBQ_INGRESS_BODY_TIMEOUT_S`` of the headers, or the
  answer is 408 and the connection is closed (:mod:`producers.ingress.bodylimit`);
* at most ``NBQ_INGRESS_MAX_CONNECTIONS`` connections (and as many running requests) per
  process; uvicorn answers 503 beyond them (``limit_concurrency``);
* an idle kept-alive connection is closed after :data:`KEEP_ALIVE_S`;
* no access log: callback URLs carry a per-job token in their query string.

docs/operations.md "Ingress limits" lists them with their defaults.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds an idle kept-alive connection stays open (uvicorn's default, set on purpose).
KEEP_ALIVE_S: Final = 5
#: Connections waiting to be accepted by the kernel (uvicorn's default).
BACKLOG: Final = 2048


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers.

    Armed when the connection opens and when a request's first byte arrives, disarmed
    when its headers are complete; if it fires first the connection is closed (no answer:
    the request was never read, so there is nothing to answer to).
    """

    #: Seconds; None reads ``NBQ_INGRESS_HEADER_TIMEOUT_S`` (each process's own settings).
    header_timeout_s: ClassVar[float | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _timeout_s(self) -> float:
        if self.header_timeout_s is not None:
            return self.header_timeout_s
        from nanobanana_queue.workers.settings import get_settings

        return get_settings().ingress_header_timeout_s

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self._timeout_s(), self._expired)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_options(settings: Any) -> dict[str, Any]:
    """The keyword arguments ``uvicorn.run`` / ``uvicorn.Config`` get from ``nbq serve``."""
    return {
        "http": HeaderDeadlineProtocol,
        "limit_concurrency": settings.ingress_max_connections,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "backlog": BACKLOG,
        "access_log": False,
    }


def uvicorn_config(app: Any, settings: Any, *, host: str, port: int, **extra: Any) -> Config:
    """A ``uvicorn.Config`` for ``app`` with the limits above (tests serve it in-process)."""
    return Config(app, host=host, port=port, **uvicorn_options(settings), **extra)
