"""The connect-time guard: resolve once, check every address, connect only to checked IPs."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import httpx
import pytest

from nanobanana_queue.workers.errors import UnsafeUrlError
from nanobanana_queue.workers.security.netguard import (
    GuardedBackend,
    GuardedTransport,
    deadline_scope,
    guarded_client,
)
from nanobanana_queue.workers.security.urlguard import UrlPolicy
from tests.workers.security.fakes import FakeDns, SpyBackend

WILDCARD = UrlPolicy(("*.example.com",), allow_http=True)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    return FakeDns(monkeypatch)


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["127.0.0.1"], "loopback"),
        (["10.1.2.3"], "private"),
        (["169.254.169.254"], "link-local"),
        (["::1"], "loopback"),
        (["fd00::1"], "private"),
        (["::ffff:169.254.169.254"], "link-local"),
        (["93.184.216.34", "127.0.0.1"], "loopback"),  # one bad answer spoils the lot
    ],
)
def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(
    dns: FakeDns, addresses: list[str], reason: str
) -> None:
    # Given a wildcard-allowed name whose DNS answer points inside
    dns.add("cdn.example.com", *addresses)
    spy = SpyBackend()

    # When it is fetched through the guarded client
    with guarded_client(WILDCARD, inner=spy) as client, pytest.raises(UnsafeUrlError) as err:
        client.get("http://cdn.example.com/r.png?sig=SECRET")

    # Then it is refused with the reason and no connection is attempted
    assert reason in str(err.value)
    assert "cdn.example.com" in str(err.value)
    assert "SECRET" not in str(err.value)
    assert spy.connects == []


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(dns: FakeDns) -> None:
    dns.add("cdn.example.com", "93.184.216.34")
    spy = SpyBackend()

    with guarded_client(WILDCARD, inner=spy) as client, pytest.raises(httpx.HTTPError):
        client.get("http://cdn.example.com/r.png")

    assert spy.connects == [("93.184.216.34", 80)]
    assert dns.queries == ["cdn.example.com"]


def test_tls_still_verifies_the_host_name_not_the_ip(dns: FakeDns) -> None:
    dns.add("cdn.example.com", "93.184.216.34")
    spy = SpyBackend()

    with guarded_client(WILDCARD, inner=spy) as client, pytest.raises(httpx.ConnectError):
        client.get("https://cdn.example.com/r.png")

    assert spy.connects == [("93.184.216.34", 443)]
    assert spy.stream.tls_hostnames == ["cdn.example.com"]


def test_a_name_opted_in_as_private_may_resolve_to_loopback(dns: FakeDns) -> None:
    dns.add("emulator.test", "127.0.0.1")
    spy = SpyBackend()
    policy = UrlPolicy((), allow_http=True, private_hosts=("emulator.test",))

    with guarded_client(policy, inner=spy) as client, pytest.raises(httpx.HTTPError):
        client.get("http://emulator.test:8080/r.png")

    assert spy.connects == [("127.0.0.1", 8080)]


def test_link_local_is_refused_even_for_an_exactly_listed_name(dns: FakeDns) -> None:
    dns.add("metadata.test", "169.254.169.254")
    spy = SpyBackend()
    policy = UrlPolicy((), allow_http=True, private_hosts=("metadata.test",))

    with guarded_client(policy, inner=spy) as client, pytest.raises(UnsafeUrlError):
        client.get("http://metadata.test/latest/meta-data/")

    assert spy.connects == []


def test_unresolvable_names_are_a_connection_error_not_a_refusal(dns: FakeDns) -> None:
    spy = SpyBackend()

    with guarded_client(WILDCARD, inner=spy) as client, pytest.raises(httpx.ConnectError):
        client.get("http://nowhere.example.com/")

    assert spy.connects == []


def test_unix_sockets_are_never_opened() -> None:
    backend = GuardedBackend(WILDCARD, SpyBackend())

    with pytest.raises(UnsafeUrlError):
        backend.connect_unix_socket("/var/run/docker.sock")


def test_environment_proxies_are_ignored(monkeypatch: pytest.MonkeyPatch, dns: FakeDns) -> None:
    # A proxy would do the connecting out of the guard's sight.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")
    dns.add("cdn.example.com", "93.184.216.34")
    spy = SpyBackend()

    with guarded_client(WILDCARD, inner=spy) as client, pytest.raises(httpx.HTTPError):
        client.get("http://cdn.example.com/r.png")

    assert spy.connects == [("93.184.216.34", 80)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stall: threading.Event

    def do_GET(self) -> None:
        if self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            self.server.stall.wait(10)  # type: ignore[attr-defined]
            return
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.stall = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.stall.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_the_transport_really_uses_the_guarded_backend(loopback_server: str) -> None:
    # Pins down the one httpx private detail we rely on (HTTPTransport._pool).
    listed = GuardedTransport(UrlPolicy((), allow_http=True, private_hosts=("127.0.0.1",)))
    unlisted = GuardedTransport(UrlPolicy(("*.example.com",), allow_http=True))

    with httpx.Client(transport=listed) as client:
        assert client.get(loopback_server).content == b"hello"
    with httpx.Client(transport=unlisted) as client, pytest.raises(UnsafeUrlError):
        client.get(loopback_server)


def test_socket_reads_stop_at_the_deadline(loopback_server: str) -> None:
    policy = UrlPolicy((), allow_http=True, private_hosts=("127.0.0.1",))

    with guarded_client(policy) as client:
        with (
            client.stream("GET", f"{loopback_server}/stall", timeout=30) as response,
            deadline_scope(time.monotonic() + 0.2),
            pytest.raises(httpx.ReadTimeout),
        ):
            response.read()
        with deadline_scope(time.monotonic() - 1), pytest.raises(httpx.TimeoutException):
            client.get(loopback_server)


def test_connect_errors_from_every_address_surface_as_connect_error(dns: FakeDns) -> None:
    class Refusing(SpyBackend):
        def connect_tcp(
            self, host: str, port: int, *args: object, **kwargs: object
        ) -> httpcore.NetworkStream:
            self.connects.append((host, port))
            raise httpcore.ConnectError("refused")

    dns.add("cdn.example.com", "93.184.216.34", "93.184.216.35")
    spy = Refusing()

    with guarded_client(WILDCARD, inner=spy) as client, pytest.raises(httpx.ConnectError):
        client.get("http://cdn.example.com/")

    assert spy.connects == [("93.184.216.34", 80), ("93.184.216.35", 80)]


def _self_signed(name: str) -> tuple[bytes, bytes]:
    """A throwaway certificate (and key) for ``name``, in PEM."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def tls_server(tmp_path: Any) -> Iterator[tuple[int, bytes, list[str | None]]]:
    """HTTPS on 127.0.0.1 with a certificate for ``cdn.example.com``; records SNI names."""
    cert_pem, key_pem = _self_signed("cdn.example.com")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    sni: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.stall = threading.Event()  # type: ignore[attr-defined]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1], cert_pem, sni
    server.shutdown()
    server.server_close()


def test_tls_to_the_checked_ip_verifies_the_certificate_for_the_name(
    dns: FakeDns, tls_server: tuple[int, bytes, list[str | None]]
) -> None:
    # Given cdn.example.com resolving to our loopback TLS server, opted in as private
    port, cert_pem, sni = tls_server
    dns.add("cdn.example.com", "127.0.0.1")
    dns.add("other.example.com", "127.0.0.1")
    trust = ssl.create_default_context(cadata=cert_pem.decode())
    policy = UrlPolicy((), private_hosts=("cdn.example.com", "other.example.com"))

    with guarded_client(policy, verify=trust) as client:
        # When fetched by name, Then SNI and the certificate check use the name
        assert client.get(f"https://cdn.example.com:{port}/").content == b"hello"
        assert sni == ["cdn.example.com"]
        # And a name the certificate does not cover fails verification
        with pytest.raises(httpx.ConnectError, match=r"(?i)certificate|hostname"):
            client.get(f"https://other.example.com:{port}/")
