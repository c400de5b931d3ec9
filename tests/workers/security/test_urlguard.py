"""The static URL guards: producer reference images and result links (no DNS here)."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.errors import UnsafeUrlError
from nanobanana_queue.workers.security.urlguard import (
    UrlPolicy,
    check_reference_url,
    check_result_url,
    redact_url,
)
from nanobanana_queue.workers.settings import load_settings

HOSTILE_REFERENCE_URLS = [
    ("http://127.0.0.1/a.png", "loopback"),
    ("http://127.8.9.10/a.png", "loopback"),
    ("http://10.0.0.5/a.png", "private"),
    ("http://192.168.0.1/a.png", "private"),
    ("http://172.20.0.1/a.png", "private"),
    ("http://[::1]/a.png", "loopback"),
    ("http://[::ffff:127.0.0.1]/a.png", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[fd12:3456::1]/a.png", "private"),
    ("http://[fe80::1]/a.png", "link-local"),
    ("http://[fe80::1%25eth0]/a.png", "not allowed"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0.0.0.0/a.png", "unspecified"),
    ("http://2130706433/a.png", "non-standard form (2130706433 = 127.0.0.1)"),
    ("http://0177.0.0.1/a.png", "non-standard form"),
    ("http://0x7f.1/a.png", "non-standard form"),
    ("http://0x7f000001/a.png", "non-standard form"),
    ("http://127.1/a.png", "non-standard form"),
    ("http://127.0.0.1./a.png", "non-standard form"),
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/a.png", "loopback"),  # full-width
    ("http://%31%32%37.0.0.1/a.png", "percent"),
    ("http://foo.123/a.png", "ends in a number"),
    ("http://localhost/a.png", "names this machine"),
    ("http://localhost./a.png", "names this machine"),
    ("http://LocalHost/a.png", "names this machine"),
    ("http://images.localhost/a.png", "names this machine"),
    ("http://images.localhost./a.png", "names this machine"),
    ("http://metadata.google.internal/a.png", "names this machine"),
    ("http://minio/a.png", "single-label"),
    ("https://allowed.example@127.0.0.1/a.png", "credentials"),
    ("https://user:pw@cdn.example.com/a.png", "credentials"),
    ("https://allowed.example\\@127.0.0.1/a.png", "backslashes"),
    ("https://cdn.example.com\t.evil/a.png", "whitespace"),
    ("ftp://cdn.example.com/a.png", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://cdn.example.com/_x", "scheme 'gopher'"),
    ("data:image/png;base64,AAAA", "scheme 'data'"),
    ("cdn.example.com/a.png", "scheme '(none)'"),
    ("http:///a.png", "no host"),
    ("https://", "no host"),
    ("http://cdn.example.com:99999/a.png", "not a valid URL"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE_REFERENCE_URLS)
def test_hostile_reference_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrlError) as refused:
        check_reference_url(url)

    message = str(refused.value)
    assert message.startswith("image URL ")
    assert reason in message


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/a.png",
        "http://cdn.example.com:8080/a.png?size=large",
        "https://8.8.8.8/a.png",
        "https://[2606:4700::1111]/a.png",
        "https://münchen.example/a.png",
        "https://CDN.Example.COM./a.png",
    ],
)
def test_public_reference_urls_pass_unchanged(url: str) -> None:
    assert check_reference_url(url) == url


def test_reference_url_refusal_names_the_url() -> None:
    with pytest.raises(UnsafeUrlError, match=r"'http://127\.0\.0\.1/x\.png'"):
        check_reference_url("http://127.0.0.1/x.png")


EMULATOR = UrlPolicy(
    ("*.example.com", "files.vendor.test"), allow_http=True, private_hosts=("127.0.0.1",)
)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.2:9000/r.png", "not in NBQ_RESULT_URL_ALLOWED_HOSTS"),
        ("http://[::1]/r.png", "not in NBQ_RESULT_URL_ALLOWED_HOSTS"),
        ("http://localhost/r.png", "not in NBQ_RESULT_URL_ALLOWED_HOSTS"),
        ("http://example.com/r.png", "not in NBQ_RESULT_URL_ALLOWED_HOSTS"),
        ("http://evil-example.com/r.png", "not in NBQ_RESULT_URL_ALLOWED_HOSTS"),
        ("http://example.com.evil.test/r.png", "not in NBQ_RESULT_URL_ALLOWED_HOSTS"),
        ("http://169.254.169.254/latest", "not in NBQ_RESULT_URL_ALLOWED_HOSTS"),
        ("http://0x7f.1/r.png", "non-standard form"),
        ("http://2130706433/r.png", "non-standard form"),
        ("https://a.example.com@127.0.0.1/r.png", "credentials"),
        ("https://x:y@a.example.com/r.png", "credentials"),
        ("ftp://a.example.com/r.png", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("http:///r.png", "no host"),
        ("http://a.local.example.com%2e/r.png", "percent"),
    ],
)
def test_result_urls_outside_the_policy_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrlError) as refused:
        check_result_url(url, EMULATOR)

    assert reason in str(refused.value)


def test_plain_http_needs_allow_http() -> None:
    https_only = UrlPolicy(("*.example.com",))

    with pytest.raises(UnsafeUrlError, match="use https"):
        check_result_url("http://a.example.com/r.png", https_only)
    assert check_result_url("https://a.example.com/r.png", https_only).host == "a.example.com"


def test_link_local_literal_is_refused_even_when_listed() -> None:
    policy = UrlPolicy(("169.254.169.254", "fe80::1"), allow_http=True)

    for url in ("http://169.254.169.254/latest", "http://[fe80::1]/"):
        with pytest.raises(UnsafeUrlError, match="link-local"):
            check_result_url(url, policy)


def test_loopback_literal_is_allowed_only_when_opted_in_as_a_private_host() -> None:
    assert check_result_url("http://127.0.0.1:9/r.png?sig=1", EMULATOR).port == 9
    opted_in = UrlPolicy((), allow_http=True, private_hosts=("[::1]",))
    assert check_result_url("http://[::1]/r", opted_in)
    with pytest.raises(UnsafeUrlError, match="not in NBQ_RESULT_URL_PRIVATE_HOSTS"):
        check_result_url("http://[::1]/r", UrlPolicy(("[::1]",), allow_http=True))


def test_wildcard_matches_subdomains_but_not_the_apex() -> None:
    policy = UrlPolicy(("*.evolink.ai",))

    assert policy.allows_host("files.evolink.ai")
    assert policy.allows_host("a.b.evolink.ai.")
    assert not policy.allows_host("evolink.ai")
    assert not policy.allows_host("notevolink.ai")
    assert not policy.lists_exactly("files.evolink.ai")


def test_result_url_refusal_never_shows_the_signature() -> None:
    with pytest.raises(UnsafeUrlError) as refused:
        check_result_url("http://127.0.0.2/r.png?X-Amz-Signature=SECRET#frag", EMULATOR)

    assert "SECRET" not in str(refused.value)
    assert "http://127.0.0.2/r.png?<redacted>" in str(refused.value)


def test_redact_url_drops_credentials_query_and_fragment() -> None:
    assert redact_url("https://u:p@cdn.example.com:8443/a/b.png?sig=S#x") == (
        "https://cdn.example.com:8443/a/b.png?<redacted>"
    )
    assert redact_url("http://[::1]/x") == "http://[::1]/x"
    assert "sig" not in redact_url("http://bad:port:x/?sig=1")


def test_policy_normalises_entries_and_rejects_nonsense() -> None:
    policy = UrlPolicy((" Files.Vendor.TEST. ", "[::1]", "*.CDN.example.com"))

    assert policy.allowed_hosts == ("files.vendor.test", "::1", "*.cdn.example.com")
    for bad in ("*", "*.10.0.0.1", "0x7f.1", "https://x.com/"):
        with pytest.raises(ValueError, match="allowed host"):
            UrlPolicy((bad,))
    with pytest.raises(ValueError, match="max_redirects must be >= 0"):
        UrlPolicy((), max_redirects=-1)


def test_policy_from_settings_reads_the_download_settings() -> None:
    settings = load_settings(
        result_url_allowed_hosts="127.0.0.1,*.evolink.ai",
        result_url_allow_http=True,
        download_max_redirects=5,
    )

    policy = UrlPolicy.from_settings(settings)

    assert policy == UrlPolicy(("127.0.0.1", "*.evolink.ai"), allow_http=True, max_redirects=5)
