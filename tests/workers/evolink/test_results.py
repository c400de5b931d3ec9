"""The guarded result fetcher, over real loopback HTTP servers (no other network)."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from nanobanana_queue.workers.errors import (
    ResultExpiredError,
    ResultFetchError,
    ResultRedirectLoopError,
    ResultTooLargeError,
    UnsafeUrlError,
)
from nanobanana_queue.workers.evolink.results import open_result
from nanobanana_queue.workers.security.netguard import guarded_client
from nanobanana_queue.workers.security.urlguard import UrlPolicy
from tests.workers.security.fakes import FakeDns, SpyBackend

SIG = "X-Amz-Signature=SECRET123"
BLOCK = bytes(range(256)) * 256  # 64 KiB
Route = Callable[["_Handler"], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.hits.append(path)
        route = self.server.routes.get(path)
        if route is None:
            self.send_body(404, b"nope")
        else:
            route(self)

    def send_body(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_body(302, b"", Location=location)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        self.connections = 0
        self.stop = threading.Event()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-body is what several tests provoke

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)
        return f"http://{host}:{port}"


def _serve(host: str) -> Iterator[LoopbackServer]:
    server = LoopbackServer(host)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def other_server() -> Iterator[LoopbackServer]:
    """A second server on 127.0.0.2: same machine, but not in the allowlist."""
    yield from _serve("127.0.0.2")


POLICY = UrlPolicy((), allow_http=True, max_redirects=3, private_hosts=("127.0.0.1",))


def fetch(url: str, policy: UrlPolicy = POLICY, **kwargs: Any) -> bytes:
    options: dict[str, Any] = {"max_bytes": 64 * 1024 * 1024, "timeout_s": 10.0} | kwargs
    with open_result(url, policy=policy, **options) as result:
        return b"".join(result.iter_chunks())


def test_a_multi_megabyte_result_streams_in_chunks_with_bounded_memory(
    server: LoopbackServer,
) -> None:
    size = 8 * 1024 * 1024

    def big(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(size))
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        for _ in range(size // len(BLOCK)):
            h.wfile.write(BLOCK)

    server.routes["/big.png"] = big
    sizes: list[int] = []
    tracemalloc.start()
    try:
        with open_result(
            f"{server.base}/big.png?{SIG}", policy=POLICY, max_bytes=size, timeout_s=30
        ) as result:
            assert result.content_length == size
            assert result.content_type == "image/png"
            assert result.final_url == f"{server.base}/big.png?<redacted>"
            for chunk in result.iter_chunks():
                sizes.append(len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert sum(sizes) == size
    assert set(sizes) == {256 * 1024}
    assert peak < 2 * 1024 * 1024  # a quarter of the body, at most


def test_a_redirect_chain_within_the_limit_is_followed(server: LoopbackServer) -> None:
    server.routes["/a"] = lambda h: h.redirect("/b?sig=1")
    server.routes["/b"] = lambda h: h.redirect(f"{server.base}/c")
    server.routes["/c"] = lambda h: h.redirect(f"//127.0.0.1:{server.server_address[1]}/img")
    server.routes["/img"] = lambda h: h.send_body(200, b"PNG")

    assert fetch(f"{server.base}/a?{SIG}") == b"PNG"
    assert server.hits == ["/a", "/b", "/c", "/img"]


def test_a_redirect_loop_is_a_permanent_error_found_on_its_first_repeat(
    server: LoopbackServer,
) -> None:
    server.routes["/loop"] = lambda h: h.redirect("/loop")

    with pytest.raises(ResultRedirectLoopError, match="redirect loop") as err:
        fetch(f"{server.base}/loop?{SIG}")

    assert not err.value.retryable and err.value.reason == "redirect_loop"
    assert server.hits == ["/loop"] * 2  # /loop?sig, then /loop, which points at itself
    assert "SECRET" not in str(err.value)


def test_too_many_redirects_is_permanent_too(server: LoopbackServer) -> None:
    def redirect_to(target: str) -> Route:
        return lambda h: h.redirect(target)

    for n in range(10):
        server.routes[f"/r{n}"] = redirect_to(f"/r{n + 1}")

    with pytest.raises(ResultRedirectLoopError, match="more than 3 redirects") as err:
        fetch(f"{server.base}/r0?{SIG}")

    assert not err.value.retryable
    assert server.hits == ["/r0", "/r1", "/r2", "/r3"]


def test_a_redirect_to_an_unlisted_host_is_refused_and_never_contacted(
    server: LoopbackServer, other_server: LoopbackServer
) -> None:
    other_server.routes["/img"] = lambda h: h.send_body(200, b"PNG")
    server.routes["/go"] = lambda h: h.redirect(f"{other_server.base}/img?{SIG}")

    with pytest.raises(UnsafeUrlError, match="not in NBQ_RESULT_URL_ALLOWED_HOSTS") as err:
        fetch(f"{server.base}/go")

    assert other_server.connections == 0
    assert "SECRET" not in str(err.value)


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://0x7f.1/img",
        "file:///etc/passwd",
        "http://user@127.0.0.1/img",
    ],
)
def test_a_redirect_to_a_forbidden_place_is_refused_before_any_connection(
    server: LoopbackServer, location: str
) -> None:
    server.routes["/go"] = lambda h: h.redirect(location)
    policy = UrlPolicy(("169.254.169.254",), allow_http=True, private_hosts=("127.0.0.1",))

    with (
        guarded_client(policy) as client,
        pytest.raises(UnsafeUrlError),
        open_result(f"{server.base}/go", policy=policy, max_bytes=100, timeout_s=10, client=client),
    ):
        pass

    assert server.hits == ["/go"]


def test_a_redirect_to_a_name_resolving_inside_is_refused_at_connect_time(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an allowed wildcard whose name resolves to loopback (DNS rebinding style)
    dns = FakeDns(monkeypatch)
    dns.add("img.example.com", "127.0.0.1")
    port = server.server_address[1]
    server.routes["/go"] = lambda h: h.redirect(f"http://img.example.com:{port}/img")
    server.routes["/img"] = lambda h: h.send_body(200, b"PNG")
    policy = UrlPolicy(("*.example.com",), allow_http=True, private_hosts=("127.0.0.1",))

    # When the link redirects there, Then it is refused and /img is never requested
    with pytest.raises(UnsafeUrlError, match=r"resolves to 127\.0\.0\.1"):
        fetch(f"{server.base}/go", policy)
    assert server.hits == ["/go"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2/r.png",
        "http://169.254.169.254/latest",
        "http://[::1]/r.png",
        "http://2130706433/r.png",
        "http://localhost./r.png",
        "https://127.0.0.1@evil.example.net/r.png",
        "gopher://127.0.0.1/_x",
    ],
)
def test_hostile_result_urls_are_refused_without_any_connection(url: str) -> None:
    spy = SpyBackend()
    with (
        guarded_client(POLICY, inner=spy) as client,
        pytest.raises(UnsafeUrlError),
        open_result(url, policy=POLICY, max_bytes=100, timeout_s=5, client=client),
    ):
        pass

    assert spy.connects == []


@pytest.mark.parametrize("status", [403, 404, 410])
def test_gone_links_are_reported_as_expired(server: LoopbackServer, status: int) -> None:
    server.routes["/r.png"] = lambda h: h.send_body(status, b"AccessDenied")

    with pytest.raises(
        ResultExpiredError, match=f"expired or no longer available \\(HTTP {status}\\)"
    ) as err:
        fetch(f"{server.base}/r.png?{SIG}")

    assert "SECRET" not in str(err.value)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_trouble_is_a_retryable_fetch_error(server: LoopbackServer, status: int) -> None:
    server.routes["/r.png"] = lambda h: h.send_body(status, b"oops")

    with pytest.raises(ResultFetchError, match=f"HTTP {status}") as err:
        fetch(f"{server.base}/r.png?{SIG}")

    assert err.value.retryable
    assert "SECRET" not in str(err.value)


def test_other_client_errors_are_permanent(server: LoopbackServer) -> None:
    server.routes["/r.png"] = lambda h: h.send_body(400, b"bad signature")

    with pytest.raises(ResultExpiredError, match="rejected \\(HTTP 400\\)"):
        fetch(f"{server.base}/r.png?{SIG}")


def test_an_oversized_content_length_is_refused_before_reading(server: LoopbackServer) -> None:
    def huge(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(10**12))
        h.end_headers()
        h.wfile.write(b"x" * 10)

    server.routes["/huge"] = huge

    with pytest.raises(ResultTooLargeError, match="Content-Length") as err:
        fetch(f"{server.base}/huge?{SIG}", max_bytes=1000)
    assert "SECRET" not in str(err.value)


def test_an_oversized_chunked_body_is_cut_off_while_streaming(server: LoopbackServer) -> None:
    def endless(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for _ in range(64):  # 4 MiB offered, the cap is 200 KiB
                h.wfile.write(b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK))
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up, as it should

    server.routes["/endless"] = endless
    received: list[int] = []

    with open_result(
        f"{server.base}/endless?{SIG}",
        policy=POLICY,
        max_bytes=200 * 1024,
        timeout_s=10,
        chunk_bytes=32 * 1024,
    ) as result:
        assert result.content_length is None
        with pytest.raises(ResultTooLargeError, match="larger than 204800 bytes"):
            received.extend(len(chunk) for chunk in result.iter_chunks())

    assert sum(received) <= 200 * 1024


def test_a_body_exactly_at_the_cap_is_accepted(server: LoopbackServer) -> None:
    server.routes["/r.png"] = lambda h: h.send_body(200, b"x" * 1000)

    assert fetch(f"{server.base}/r.png", max_bytes=1000, chunk_bytes=300) == b"x" * 1000


def _stall_after_headers(h: _Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    h.wfile.write(b"x" * 10)
    h.wfile.flush()
    h.server.stop.wait(30)


def _trickle(h: _Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "100000")
    h.end_headers()
    for _ in range(100000):
        if h.server.stop.wait(0.02):
            return
        h.wfile.write(b"x")
        h.wfile.flush()


def _stall_before_headers(h: _Handler) -> None:
    h.server.stop.wait(30)


@pytest.mark.parametrize("route", [_stall_after_headers, _trickle, _stall_before_headers])
def test_a_slow_server_is_a_fetch_error_within_the_deadline(
    server: LoopbackServer, route: Route
) -> None:
    server.routes["/slow"] = route

    with pytest.raises(ResultFetchError) as err:
        fetch(f"{server.base}/slow?{SIG}", timeout_s=0.3)

    assert err.value.retryable
    assert "SECRET" not in str(err.value)


def test_a_refused_connection_is_a_retryable_fetch_error() -> None:
    with LoopbackServer("127.0.0.1") as closed:
        url = f"{closed.base}/r.png?{SIG}"

    with pytest.raises(ResultFetchError, match="connection failed") as err:
        fetch(url)
    assert "SECRET" not in str(err.value)


def test_an_injected_client_is_reused_and_left_open(server: LoopbackServer) -> None:
    server.routes["/r.png"] = lambda h: h.send_body(200, b"PNG")

    with guarded_client(POLICY) as client:
        for _ in range(3):
            with open_result(
                f"{server.base}/r.png", policy=POLICY, max_bytes=10, timeout_s=5, client=client
            ) as result:
                assert b"".join(result.iter_chunks()) == b"PNG"
        assert not client.is_closed

    assert server.connections == 1  # keep-alive: one connection for three fetches


def test_a_mock_transport_client_still_gets_the_url_checks() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"PNG"))
    policy = UrlPolicy(("*.example.com",))

    with httpx.Client(transport=transport) as client:
        with open_result(
            "https://a.example.com/r.png", policy=policy, max_bytes=10, timeout_s=5, client=client
        ) as result:
            assert b"".join(result.iter_chunks()) == b"PNG"
        with (
            pytest.raises(UnsafeUrlError),
            open_result(
                "https://b.other.net/r.png", policy=policy, max_bytes=10, timeout_s=5, client=client
            ),
        ):
            pass


def test_invalid_limits_are_rejected() -> None:
    with (
        pytest.raises(ValueError, match="must be positive"),
        open_result("https://a.example.com/", policy=POLICY, max_bytes=0, timeout_s=1),
    ):
        pass
