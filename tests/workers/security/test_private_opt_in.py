"""The default allowlist never reaches private places (issue 13): only the separate
NBQ_RESULT_URL_PRIVATE_HOSTS opt-in may let a result host resolve to loopback/private."""

from __future__ import annotations

import httpx
import pytest

from nanobanana_queue.workers.errors import UnsafeUrlError
from nanobanana_queue.workers.security.netguard import guarded_client
from nanobanana_queue.workers.security.urlguard import UrlPolicy, check_result_url
from nanobanana_queue.workers.settings import Settings
from tests.workers.security.fakes import FakeDns, SpyBackend

INSIDE = ["127.0.0.1", "::1", "10.0.0.7", "169.254.169.254"]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    return FakeDns(monkeypatch)


@pytest.mark.parametrize("address", INSIDE)
@pytest.mark.parametrize("host", ["evolink.ai", "files.evolink.ai"])  # apex and wildcard
@pytest.mark.parametrize("scheme", ["https", "http"])
def test_the_default_allowlist_refuses_a_host_resolving_inside_before_any_connect(
    dns: FakeDns, host: str, address: str, scheme: str
) -> None:
    # Given the default settings (http allowed only to reach the connect step)
    dns.add(host, address)
    settings = Settings(result_url_allow_http=scheme == "http")
    policy = UrlPolicy.from_settings(settings)
    spy = SpyBackend()
    # When a result link names that host, Then it is refused and no socket is opened
    with guarded_client(policy, inner=spy) as client, pytest.raises(UnsafeUrlError):
        client.get(f"{scheme}://{host}/r.png")
    assert spy.connects == []


@pytest.mark.parametrize("literal", ["127.0.0.1", "[::1]", "10.0.0.7"])
def test_an_ip_literal_listed_as_allowed_is_still_refused_without_the_opt_in(
    literal: str,
) -> None:
    policy = UrlPolicy((literal,), allow_http=True)
    with pytest.raises(UnsafeUrlError, match="NBQ_RESULT_URL_PRIVATE_HOSTS"):
        check_result_url(f"http://{literal}/r.png", policy)


def test_the_opt_in_allows_loopback_and_private_but_never_link_local(dns: FakeDns) -> None:
    dns.add("emulator", "172.18.0.5")
    dns.add("meta", "169.254.169.254")
    policy = UrlPolicy.from_settings(
        Settings(result_url_allow_http=True, result_url_private_hosts="emulator,meta,127.0.0.1")
    )
    spy = SpyBackend()
    with guarded_client(policy, inner=spy) as client:
        with pytest.raises(httpx.HTTPError):  # the spy refuses to really connect
            client.get("http://emulator:8787/r.png")
        with pytest.raises(UnsafeUrlError, match="link-local"):
            client.get("http://meta/latest")
    assert spy.connects == [("172.18.0.5", 8787)]
    assert check_result_url("http://127.0.0.1:9/r.png", policy).port == 9


def test_private_hosts_must_be_exact() -> None:
    with pytest.raises(ValueError, match="wildcard"):
        UrlPolicy((), private_hosts=("*.evolink.ai",))
