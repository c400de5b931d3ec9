"""The SSRF guard for notify URLs: the result links' guard, with any public host allowed.

A notify URL is the producer's own endpoint, so there is no allowlist of hosts; what the
result-link guard refuses (another scheme, credentials in the URL, loopback, private,
link-local or reserved addresses, names of this machine) is refused here too, statically
at enqueue and again at connect time for every address a name resolves to
(``workers.security.netguard``). Loopback or private hosts only when listed exactly in
NBQ_NOTIFY_PRIVATE_HOSTS; plain ``http://`` only with NBQ_NOTIFY_ALLOW_HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nanobanana_queue.workers.errors import UnsafeUrlError
from nanobanana_queue.workers.security.urlguard import UrlPolicy, check_result_url, redact_url

if TYPE_CHECKING:
    import httpx

    from nanobanana_queue.workers.settings import Settings

#: Longest notify URL accepted (as for the API's own callback_url).
MAX_NOTIFY_URL_CHARS = 2048


@dataclass(frozen=True)
class NotifyUrlPolicy(UrlPolicy):
    """Any public host; private ones only when opted in (``private_hosts``)."""

    def allows_host(self, host: str) -> bool:
        return True


def notify_policy(settings: Settings) -> NotifyUrlPolicy:
    return NotifyUrlPolicy(
        allowed_hosts=(),
        allow_http=settings.notify_allow_http,
        max_redirects=0,
        private_hosts=tuple(settings.notify_private_hosts),
    )


def check_notify_url(url: str, policy: UrlPolicy) -> httpx.URL:
    """``url`` parsed, or :class:`UnsafeUrlError` saying why it is refused."""
    if not isinstance(url, str) or len(url) > MAX_NOTIFY_URL_CHARS:
        raise UnsafeUrlError(f"notify_url must be a URL of at most {MAX_NOTIFY_URL_CHARS} chars")
    try:
        return check_result_url(url, policy)
    except UnsafeUrlError as exc:
        reason = (
            str(exc)
            .split(" refused: ", 1)[-1]
            .replace("NBQ_RESULT_URL_PRIVATE_HOSTS", "NBQ_NOTIFY_PRIVATE_HOSTS")
        )
        raise UnsafeUrlError(f"notify_url {redact_url(url)!r} refused: {reason}") from None
