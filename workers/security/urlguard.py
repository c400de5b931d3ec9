"""URL guard (placeholder; hardened in the security work)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


from workers.errors import UnsafeUrlError

__all__ = ["UnsafeUrlError", "check_reference_url"]


def check_reference_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrlError(f"image URL {url!r}: only http(s) URLs are allowed")
    if parts.username or parts.password:
        raise UnsafeUrlError(f"image URL {url!r}: credentials in URLs are not allowed")
    host = parts.hostname or ""
    if not host:
        raise UnsafeUrlError(f"image URL {url!r}: no host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.rstrip(".").lower() == "localhost" or host.endswith(".localhost"):
            raise UnsafeUrlError(f"image URL {url!r}: loopback host") from None
        return url
    if not address.is_global:
        raise UnsafeUrlError(f"image URL {url!r}: private, loopback or reserved address")
    return url
