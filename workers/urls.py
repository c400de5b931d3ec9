"""One way to print a URL that may hold a password (logs, CLI errors, the dev stack)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def masked_url(url: str, mask: str = "***") -> str:
    """``url`` with its password replaced by ``mask`` (``redis://:***@host:6380/1``).

    A URL without a password is returned as it is; with one, its query and fragment go
    too (a query may carry a second secret). A URL that does not parse is not echoed.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    host = (parts.hostname or "") + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, f"{parts.username or ''}:{mask}@{host}", parts.path, "", ""))
