"""Static URL checks: what may be sent to the API as a reference image, and what we may fetch.

Two guards, one vocabulary of refusals:

* ``check_reference_url`` — producer ``image_urls``. The vendor fetches these, never us; we
  refuse anything that names a local or private place, without DNS (producers stay fast).
* ``check_result_url`` — result links from API answers and callbacks, before each request
  hop. Scheme, credentials, allowlist and IP literals are checked here; the addresses a
  *name* resolves to are checked at connect time by ``workers.security.netguard``.

Result links are signed: their messages never carry the query string (``redact_url``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from nanobanana_queue.workers.errors import UnsafeUrlError
from nanobanana_queue.workers.security.addresses import (
    IPAddress,
    address_problem,
    ends_in_number,
    parse_ip_host,
)

if TYPE_CHECKING:
    from nanobanana_queue.workers.settings import Settings

__all__ = [
    "UnsafeUrlError",
    "UrlPolicy",
    "check_reference_url",
    "check_result_url",
    "redact_url",
]

#: Names that always mean "this machine" or a private network, whatever DNS says.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
LOCAL_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa")

_NAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?$")
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_MAX_SHOWN = 300


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` without credentials, query (signatures) or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        shown = f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else parts.path
        query = "?<redacted>" if parts.query else ""
    except ValueError:
        cut = re.split(r"[?#]", url, maxsplit=1)
        shown, query = cut[0].rsplit("@", 1)[-1], "?<redacted>" if len(cut) > 1 else ""
    return _shorten(shown + query)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


@dataclass(frozen=True)
class _Host:
    """A URL host after normalisation: lower-case ASCII, no trailing dot, no brackets."""

    name: str
    address: IPAddress | None


def _normalise_host(raw: str) -> _Host:
    """Parse one URL host; raise ``ValueError`` with the reason when it is unusable."""
    host = raw.strip("[]") if raw.startswith("[") else raw
    if not host:
        raise ValueError("the URL has no host")
    if not host.isascii():
        try:  # IDNA nameprep maps full-width digits and ideographic dots, as browsers do
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("the host is not a valid internationalised name") from None
    host = host.lower()
    if "%" in host:
        raise ValueError("percent signs (encoded characters or IPv6 zone ids) are not allowed")
    parsed = parse_ip_host(host)
    if parsed is not None:
        address, canonical = parsed
        if not canonical:
            raise ValueError(f"IP address written in a non-standard form ({host} = {address})")
        return _Host(str(address), address)
    if ":" in host:
        raise ValueError("the host is not a valid IPv6 address")
    name = host[:-1] if host.endswith(".") else host
    if ends_in_number(name):
        raise ValueError("the host ends in a number but is not a valid IPv4 address")
    if not _NAME.match(name) or ".." in name:
        raise ValueError("the host contains characters not allowed in a host name")
    return _Host(name, None)


def _is_local_name(name: str) -> bool:
    return name in LOCAL_NAMES or name.endswith(LOCAL_SUFFIXES)


def check_reference_url(url: str) -> str:
    """Refuse a producer's reference-image URL that is not plainly public; return it as is.

    No DNS lookup: a public name that resolves to a private address is the vendor's
    problem to refuse, and we never fetch these ourselves.
    """

    def refuse(reason: str) -> UnsafeUrlError:
        return UnsafeUrlError(f"image URL {_shorten(url)!r} refused: {reason}")

    if _UNSAFE_CHARS.search(url):
        raise refuse("whitespace, control characters or backslashes are not allowed")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise refuse(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise refuse(f"scheme {parts.scheme or '(none)'!r} is not allowed; use http(s)")
    if "@" in parts.netloc:
        raise refuse("credentials (user@host) in URLs are not allowed")
    if "%" in parts.netloc:
        raise refuse("percent-encoded characters in the host are not allowed")
    try:
        host = _normalise_host(parts.hostname or "")
    except ValueError as exc:
        raise refuse(str(exc)) from None
    if host.address is not None:
        problem = address_problem(host.address)
        if problem is not None:
            raise refuse(f"{host.address} is a {problem.reason}")
    elif _is_local_name(host.name):
        raise refuse(f"{host.name!r} names this machine or a private network")
    elif "." not in host.name:
        raise refuse(f"{host.name!r} is a single-label name, not a public domain")
    return url


@dataclass(frozen=True)
class UrlPolicy:
    """Where result links may point. Configuration, not code, is how the emulator is allowed.

    ``allowed_hosts``: exact host names, ``*.example.com`` (subdomains only, not the apex)
    or IP literals; every one of them must resolve to public addresses.
    ``private_hosts`` (``NBQ_RESULT_URL_PRIVATE_HOSTS``, empty by default): a separate,
    explicit opt-in of exact names or IPs (the compose ``emulator`` host, ``127.0.0.1``
    for local runs and tests) that are allowed *and* may resolve to loopback/private
    addresses. Being listed in ``allowed_hosts`` never grants that (an ``evolink.ai``
    resolving to 127.0.0.1 is refused). Link-local (cloud metadata), multicast,
    unspecified and reserved addresses are never allowed.
    """

    allowed_hosts: tuple[str, ...]
    allow_http: bool = False
    max_redirects: int = 3
    private_hosts: tuple[str, ...] = ()
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _private: frozenset[str] = field(init=False, repr=False, compare=False)
    _suffixes: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")
        entries = tuple(_normalise_entry(entry) for entry in self.allowed_hosts)
        private = tuple(_normalise_entry(entry) for entry in self.private_hosts)
        if any("*" in e for e in private):
            raise ValueError("private hosts must be exact names or IPs, not wildcards")
        object.__setattr__(self, "allowed_hosts", entries)
        object.__setattr__(self, "private_hosts", private)
        object.__setattr__(self, "_private", frozenset(private))
        object.__setattr__(
            self, "_exact", frozenset(e for e in entries if "*" not in e) | frozenset(private)
        )
        object.__setattr__(self, "_suffixes", tuple(e[1:] for e in entries if "*" in e))

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        return cls(
            allowed_hosts=tuple(settings.result_url_allowed_hosts),
            allow_http=settings.result_url_allow_http,
            max_redirects=settings.download_max_redirects,
            private_hosts=tuple(settings.result_url_private_hosts),
        )

    def may_be_private(self, host: str) -> bool:
        """True only for hosts opted in through ``private_hosts`` (normalised)."""
        return _normalise_lookup(host) in self._private

    def lists_exactly(self, host: str) -> bool:
        """True when ``host`` (normalised) is an exact entry, not only a wildcard match."""
        return _normalise_lookup(host) in self._exact

    def allows_host(self, host: str) -> bool:
        name = _normalise_lookup(host)
        return name in self._exact or (
            parse_ip_host(name) is None and name.endswith(self._suffixes)
        )


def _normalise_lookup(host: str) -> str:
    try:
        return _normalise_host(host).name
    except ValueError:
        return host.lower()


def _normalise_entry(entry: str) -> str:
    raw = entry.strip().lower()
    if raw.startswith("*."):
        rest = _normalise_host(raw[2:])
        if rest.address is not None:
            raise ValueError(f"allowed host {entry!r}: a wildcard cannot cover IP addresses")
        return "*." + rest.name
    try:
        return _normalise_host(raw).name
    except ValueError as exc:
        raise ValueError(f"allowed host {entry!r}: {exc}") from None


def _opt_in_hint(listable: bool) -> str:
    return " (not in NBQ_RESULT_URL_PRIVATE_HOSTS)" if listable else ""


def check_result_url(url: str | httpx.URL, policy: UrlPolicy) -> httpx.URL:
    """Refuse a result link (or redirect target) the policy does not allow; return it parsed.

    Parsed with httpx, the parser that will make the request, so the host checked here is
    the host connected to. Names are resolved and checked later, at connect time.
    """
    shown = redact_url(str(url))

    def refuse(reason: str) -> UnsafeUrlError:
        return UnsafeUrlError(f"result URL {shown!r} refused: {reason}")

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise refuse("not a valid URL") from None
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parsed.scheme not in schemes:
        allowed = " or ".join(schemes)
        raise refuse(f"scheme {parsed.scheme or '(none)'!r} is not allowed; use {allowed}")
    if parsed.userinfo:
        raise refuse("credentials (user@host) in URLs are not allowed")
    try:
        host = _normalise_host(parsed.raw_host.decode("ascii"))
    except ValueError as exc:
        raise refuse(str(exc)) from None
    if not policy.allows_host(host.name):
        raise refuse(f"host {host.name!r} is not in NBQ_RESULT_URL_ALLOWED_HOSTS")
    if host.address is not None:
        problem = address_problem(host.address)
        if problem is not None and not (problem.listable and policy.may_be_private(host.name)):
            raise refuse(f"{host.address} is a {problem.reason}{_opt_in_hint(problem.listable)}")
    elif _is_local_name(host.name) and not policy.may_be_private(host.name):
        raise refuse(f"{host.name!r} names this machine or a private network")
    return parsed
