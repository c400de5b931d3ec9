"""Guarded, streaming fetch of a result image link.

Usage (the download task)::

    policy = UrlPolicy.from_settings(settings)
    with open_result(url, policy=policy, max_bytes=settings.max_result_bytes,
                     timeout_s=settings.download_timeout_s) as result:
        store.put_stream(key, result.iter_chunks(), length=result.content_length)

Status mapping (the link is a signed, expiring URL from the vendor's storage/CDN):

=====================================  =====================================================
200                                    the image: streamed by ``iter_chunks``
301/302/303/307/308 + ``Location``     followed by hand, at most ``policy.max_redirects``,
                                       each hop re-checked by the URL guard
403, 404, 410                          ``ResultExpiredError`` (the link expired)
408, 425, 429, 5xx                     ``ResultFetchError`` (retryable)
any other status (400, 401, 204, ...)  ``ResultExpiredError`` — permanent: a signed link the
                                       server rejects will not get better; the message
                                       says "rejected" and names the status
timeout, connection/DNS/protocol error ``ResultFetchError`` (retryable)
a redirect back to a URL already       ``ResultRedirectLoopError`` (``redirect_loop``,
visited, or too many redirects         permanent: the same link loops the same way again)
=====================================  =====================================================

Nothing here ever includes a link's query string (its signature) in a message or log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.errors import (
    ResultExpiredError,
    ResultFetchError,
    ResultRedirectLoopError,
    ResultTooLargeError,
)
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.security.netguard import deadline_scope, guarded_client
from nanobanana_queue.workers.security.urlguard import UrlPolicy, check_result_url, redact_url

__all__ = ["DEFAULT_CHUNK_BYTES", "ResultStream", "open_result"]

DEFAULT_CHUNK_BYTES = 256 * 1024
EXPIRED_STATUSES = frozenset({403, 404, 410})
RETRYABLE_STATUSES = frozenset({408, 425, 429})

log = get_logger(__name__)


@dataclass
class ResultStream:
    """An open 200 response. ``final_url`` is redacted (no query): safe to log or store."""

    final_url: str
    content_length: int | None
    content_type: str | None
    _response: httpx.Response = field(repr=False)
    _max_bytes: int = field(repr=False)
    _deadline: float = field(repr=False)
    _chunk_bytes: int = field(repr=False)

    def iter_chunks(self) -> Iterator[bytes]:
        """Yield the body in ``chunk_bytes`` pieces (the last may be shorter).

        Raises ``ResultTooLargeError`` as soon as more than ``max_bytes`` arrived and
        ``ResultFetchError`` on timeouts, broken connections or a passed deadline.
        """
        buffer = bytearray()
        total = 0
        try:
            for piece in self._response.iter_bytes():
                total += len(piece)
                if total > self._max_bytes:
                    raise ResultTooLargeError(
                        f"result {self.final_url!r} is larger than {self._max_bytes} bytes"
                    )
                if time.monotonic() > self._deadline:
                    raise ResultFetchError(f"result {self.final_url!r}: download deadline passed")
                buffer += piece
                while len(buffer) >= self._chunk_bytes:
                    yield bytes(buffer[: self._chunk_bytes])
                    del buffer[: self._chunk_bytes]
        except httpx.TimeoutException as exc:
            raise ResultFetchError(f"result {self.final_url!r}: timed out while reading") from exc
        except httpx.HTTPError as exc:
            raise ResultFetchError(
                f"result {self.final_url!r}: transfer failed ({type(exc).__name__})"
            ) from exc
        if buffer:
            yield bytes(buffer)


@contextmanager
def open_result(
    url: str,
    *,
    policy: UrlPolicy,
    max_bytes: int,
    timeout_s: float,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    client: httpx.Client | None = None,
) -> Iterator[ResultStream]:
    """Open a result link for streaming; everything, redirects included, within ``timeout_s``.

    ``client``: pass one built by ``workers.security.netguard.guarded_client(policy)`` to
    reuse connections; ``None`` builds (and closes) one. A client of any other origin
    (e.g. a test's ``MockTransport``) still gets every URL check but not the
    connect-time address check. Raises ``UnsafeUrlError`` before any request to a
    refused URL or address.
    """
    if max_bytes <= 0 or chunk_bytes <= 0 or timeout_s <= 0:
        raise ValueError("max_bytes, chunk_bytes and timeout_s must be positive")
    deadline = time.monotonic() + timeout_s
    with ExitStack() as stack:
        stack.enter_context(deadline_scope(deadline))
        if client is None:
            client = stack.enter_context(guarded_client(policy))
        response = _open_final(client, url, policy=policy, max_bytes=max_bytes, deadline=deadline)
        stack.callback(response.close)
        yield ResultStream(
            final_url=redact_url(str(response.url)),
            content_length=_content_length(response),
            content_type=response.headers.get("content-type"),
            _response=response,
            _max_bytes=max_bytes,
            _deadline=deadline,
            _chunk_bytes=chunk_bytes,
        )


def _open_final(
    client: httpx.Client, url: str, *, policy: UrlPolicy, max_bytes: int, deadline: float
) -> httpx.Response:
    """Follow redirects by hand, re-checking each hop; return the open 200 response."""
    target = check_result_url(url, policy)
    visited = {str(target.copy_with(fragment=None))}
    for hop in range(policy.max_redirects + 1):
        response = _send(client, target, deadline)
        if not response.is_redirect:
            try:
                _check_final(response, max_bytes)
            except BaseException:
                response.close()
                raise
            return response
        location = response.headers["location"]
        response.close()
        if hop == policy.max_redirects:
            break
        next_url = target.join(location).copy_with(fragment=None)
        if str(next_url) in visited:
            raise ResultRedirectLoopError(
                f"result {redact_url(url)!r}: redirect loop (back to {redact_url(str(next_url))!r})"
            )
        visited.add(str(next_url))
        log.info(
            "result_redirect",
            status=response.status_code,
            from_url=redact_url(str(target)),
            to_url=redact_url(str(next_url)),
        )
        target = check_result_url(next_url, policy)
    raise ResultRedirectLoopError(
        f"result {redact_url(url)!r}: more than {policy.max_redirects} redirects"
    )


def _send(client: httpx.Client, target: httpx.URL, deadline: float) -> httpx.Response:
    shown = redact_url(str(target))
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ResultFetchError(f"result {shown!r}: download deadline passed")
    request = client.build_request(
        "GET",
        target,
        headers={"Accept-Encoding": "identity", "Accept": "image/*"},
        timeout=httpx.Timeout(remaining),
    )
    try:
        response = client.send(request, stream=True, follow_redirects=False)
    except httpx.TimeoutException as exc:
        metrics.api_call("file", "timeout", "result_fetch_failed")
        raise ResultFetchError(f"result {shown!r}: timed out") from exc
    except httpx.HTTPError as exc:
        metrics.api_call("file", "connection_error", "result_fetch_failed")
        raise ResultFetchError(
            f"result {shown!r}: connection failed ({type(exc).__name__})"
        ) from exc
    metrics.api_call("file", response.status_code, "")
    return response


def _check_final(response: httpx.Response, max_bytes: int) -> None:
    status = response.status_code
    shown = redact_url(str(response.url))
    if status in EXPIRED_STATUSES:
        raise ResultExpiredError(
            f"result link expired or no longer available (HTTP {status}): {shown!r}"
        )
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise ResultFetchError(f"result server error (HTTP {status}): {shown!r}")
    if status != 200:
        raise ResultExpiredError(f"result link rejected (HTTP {status}): {shown!r}")
    length = _content_length(response)
    if length is not None and length > max_bytes:
        raise ResultTooLargeError(
            f"result {shown!r} is {length} bytes (Content-Length), over the {max_bytes} limit"
        )


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
