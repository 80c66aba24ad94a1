"""Self-tests for the loopback test servers (tests/servers).

The pool tests trust these servers to tell them which TCP connection served each
request, so the servers' own behaviour is pinned here with the stock httpx clients
and raw sockets, independent of the library under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import trio
import trustme

try:
    from tests.servers import LoopbackProxy, LoopbackServer, RequestRecord
except ImportError:  # tests/ on sys.path (pytest rootdir-less "prepend" import mode)
    from servers import LoopbackProxy, LoopbackServer, RequestRecord  # type: ignore[no-redef,import-not-found,unused-ignore]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def proxy() -> Iterator[LoopbackProxy]:
    with LoopbackProxy() as px:
        yield px


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[LoopbackServer]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    with LoopbackServer(ssl_context=server_ctx) as srv:
        yield srv


@pytest.fixture
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def handshake(client: httpx.Client, url: str, user: str | bytes = "alice") -> httpx.Response:
    """Run both legs of the /auth handshake on whatever connection the client uses."""
    user_bytes = user.encode() if isinstance(user, str) else user
    leg1 = client.get(url, headers={b"Authorization": b"Nonce init user=" + user_bytes})
    assert leg1.status_code == 401
    nonce = leg1.headers["WWW-Authenticate"].split(" ", 1)[1]
    return client.get(
        url, headers={b"Authorization": b"Nonce " + nonce.encode() + b" user=" + user_bytes}
    )


def raw_get(sock: socket.socket, path: str) -> bytes:
    """Send one GET on a raw socket and return the response head and body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "server closed before answering"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            while len(body) < length:
                body += sock.recv(65536)
    return data


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll a server counter: the server thread updates it asynchronously. The timeout is a
    hang guard for a loaded machine, not a measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# -- LoopbackServer -----------------------------------------------------------------


def test_routes_keepalive_and_log(server: LoopbackServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        hello = client.get("/")
        assert (hello.status_code, hello.text) == (200, "Hello, world!")
        assert hello.headers["X-Conn-Seq"] == "1"
        echo = client.post(
            "/echo?a=1&b=2", content=iter([b"ab", b"\xff"]), headers={"X-First": "1"}
        ).json()
        assert echo["method"] == "POST"
        assert echo["path"] == "/echo?a=1&b=2"
        assert echo["body"] == "ab\xff"
        names = [name for name, _ in echo["headers"]]
        assert names.index("X-First") < names.index("Transfer-Encoding")
        assert client.get("/status/204").status_code == 204
        assert client.get("/status/304").status_code == 304
        assert client.head("/").headers["Content-Length"] == "13"
        assert client.get("/status/418").status_code == 418
        redirect = client.get("/redirect", params={"to": "/echo", "status": "307"})
        assert (redirect.status_code, redirect.headers["Location"]) == (307, "/echo")
        assert client.get("/nowhere").status_code == 404
        assert client.get("/status/abc").status_code == 400
        assert client.get("/slow?delay=0.01").text == "slow"
        with client.stream("GET", "/stream?chunks=5&size=100&delay=0.01") as response:
            assert response.headers["Transfer-Encoding"] == "chunked"
            assert b"".join(response.iter_bytes()) == b"x" * 500
    assert server.connections_opened == 1
    assert server.requests_total == 11
    log = server.log
    assert len(log) == 11
    assert all(isinstance(r, RequestRecord) and r.conn_seq == 1 for r in log)
    assert (log[0].method, log[0].path, log[0].status) == ("GET", "/", 200)
    assert all(r.started <= r.finished for r in log)
    assert wait_for(lambda: server.open_connections == 0)
    assert server.max_open_connections == 1
    assert server.errors == []


def test_auth_handshake_is_bound_to_the_connection(server: LoopbackServer) -> None:
    url = server.url + "/auth"
    with httpx.Client() as a, httpx.Client() as b:
        anonymous = a.get(url)
        assert (anonymous.status_code, anonymous.headers["WWW-Authenticate"]) == (401, "Nonce")
        ok = handshake(a, url)
        assert ok.status_code == 200
        assert ok.json() == {"user": "alice", "conn": 1, "handshake": True}
        # Auth persists on the connection: no header needed any more.
        assert a.get(url).json() == {"user": "alice", "conn": 1, "handshake": False}

        # Leg 2 on another connection with a nonce issued on connection 1 fails.
        leg1 = a.get(url, headers={"Authorization": "Nonce init user=mallory"})
        nonce = leg1.headers["WWW-Authenticate"].split(" ", 1)[1]
        stolen = b.get(url, headers={"Authorization": f"Nonce {nonce} user=mallory"})
        assert (stolen.status_code, stolen.headers["WWW-Authenticate"]) == (401, "Nonce")
        assert stolen.headers["X-Conn-Seq"] == "2"
        # Connection 1's restarted handshake is still pending and now completes.
        done = a.get(url, headers={"Authorization": f"Nonce {nonce} user=mallory"})
        assert done.json() == {"user": "mallory", "conn": 1, "handshake": True}
        # Replaying the used nonce resets the connection to unauthenticated.
        replay = a.get(url, headers={"Authorization": f"Nonce {nonce} user=mallory"})
        assert replay.status_code == 401
        assert a.get(url).status_code == 401
        assert handshake(b, url, "bob").json()["conn"] == 2
    assert server.connection_users() == {1: None, 2: "bob"}
    assert [r.user for r in server.log if r.status == 200] == ["alice", "alice", "mallory", "bob"]


def test_auth_interrupted_handshake_and_non_ascii(server: LoopbackServer) -> None:
    url = server.url + "/auth"
    with httpx.Client() as client:
        leg1 = client.get(url, headers={"Authorization": "Nonce init user=alice"})
        nonce = leg1.headers["WWW-Authenticate"].split(" ", 1)[1]
        assert client.get(url).status_code == 401  # interrupts the pending handshake
        late = client.get(url, headers={"Authorization": f"Nonce {nonce} user=alice"})
        assert late.status_code == 401
        assert handshake(client, url, "Jürgen").json()["user"] == "Jürgen"
        assert handshake(client, url, "Jürgen".encode("latin-1")).json()["user"] == "Jürgen"
    assert server.connection_users() == {1: "Jürgen"}


def test_auth_per_request() -> None:
    with LoopbackServer(auth_per_request=True) as server, httpx.Client() as client:
        url = server.url + "/auth"
        assert handshake(client, url).json() == {"user": "alice", "conn": 1, "handshake": True}
        assert client.get(url).status_code == 401
        assert handshake(client, url).status_code == 200
        assert server.connection_users() == {1: None}
        assert server.connections_opened == 1


def test_idle_timeout_closes_connection() -> None:
    with LoopbackServer(idle_timeout=0.2) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            assert b"X-Conn-Seq: 1" in raw_get(sock, "/")
            sock.settimeout(30)  # a hang guard only: the server closes after 0.2 s idle
            assert sock.recv(1024) == b""
        assert wait_for(lambda: server.open_connections == 0)
        # A connection that never sends anything is also closed.
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(30)  # a hang guard
            assert sock.recv(1024) == b""


def test_close_drop_hang_and_stop() -> None:
    server = LoopbackServer().start()
    try:
        with httpx.Client(base_url=server.url) as client:
            closing = client.get("/close")
            assert (closing.status_code, closing.headers["Connection"]) == (200, "close")
            with pytest.raises(httpx.RemoteProtocolError):
                client.get("/drop")
            assert client.get("/").headers["X-Conn-Seq"] == "3"
        assert server.requests_total == 3
        assert [r.path for r in server.log] == ["/close", "/"]
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /hang HTTP/1.1\r\nHost: test\r\n\r\n")
            assert wait_for(lambda: server.requests_total == 4)
            server.stop()  # returns although a request hangs: the connection is aborted
            assert server.open_connections == 0
            sock.settimeout(30)  # a hang guard
            with contextlib.suppress(ConnectionResetError):  # abort() may send RST
                assert sock.recv(1024) == b""
    finally:
        server.stop()


def test_concurrent_counters_and_reset(server: LoopbackServer) -> None:
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        for sock in socks:
            raw_get(sock, "/")
        assert server.open_connections == 3
        assert server.max_open_connections == 3
    finally:
        for sock in socks:
            sock.close()
    assert wait_for(lambda: server.open_connections == 0)
    server.reset()
    assert (server.connections_opened, server.requests_total, server.log) == (0, 0, [])
    assert server.max_open_connections == 0
    with httpx.Client() as client:
        assert client.get(server.url).headers["X-Conn-Seq"] == "4"  # serials keep counting
    assert server.connections_opened == 1


def test_usable_from_asyncio_and_trio(server: LoopbackServer) -> None:
    async def burst() -> set[str]:
        async with httpx.AsyncClient(base_url=server.url) as client:
            responses = [client.get("/slow?delay=0.05") for _ in range(5)]
            if trio_mode:
                results: list[httpx.Response] = []

                async def one(request: object) -> None:
                    results.append(await request)  # type: ignore[misc]

                async with trio.open_nursery() as nursery:
                    for request in responses:
                        nursery.start_soon(one, request)
            else:
                results = await asyncio.gather(*responses)
            return {r.headers["X-Conn-Seq"] for r in results}

    trio_mode = False
    assert len(asyncio.run(burst())) == 5
    trio_mode = True
    assert len(trio.run(burst)) == 5
    assert server.max_open_connections == 5
    assert server.requests_total == 10


def test_throughput(server: LoopbackServer) -> None:
    # Speed is measured in bench/, not asserted here: 1000 keep-alive requests, one socket.
    with httpx.Client(base_url=server.url) as client:
        for _ in range(1000):
            client.get("/")
    assert server.connections_opened == 1
    assert server.requests_total == 1000


# -- LoopbackProxy ------------------------------------------------------------------


def test_proxy_forwarding_keeps_connection_bound_auth(
    server: LoopbackServer, proxy: LoopbackProxy
) -> None:
    url = server.url + "/auth"
    with httpx.Client(proxy=proxy.url) as a, httpx.Client(proxy=proxy.url) as b:
        assert handshake(a, url).json() == {"user": "alice", "conn": 1, "handshake": True}
        assert a.get(url).json()["handshake"] is False
        leg1 = a.get(url, headers={"Authorization": "Nonce init user=eve"})
        nonce = leg1.headers["WWW-Authenticate"].split(" ", 1)[1]
        # Another proxy connection means another upstream connection: nonce refused.
        assert b.get(url, headers={"Authorization": f"Nonce {nonce} user=eve"}).status_code == 401
        echo = a.post(server.url + "/echo?q=1", content=b"body").json()
        assert (echo["path"], echo["body"]) == ("/echo?q=1", "body")
        with a.stream("GET", server.url + "/stream?chunks=3&size=10") as response:
            assert b"".join(response.iter_bytes()) == b"x" * 30
        closing = a.get(server.url + "/close")
        assert closing.headers["Connection"] == "close"
        assert a.get(server.url).headers["X-Conn-Seq"] == "3"
        with pytest.raises(httpx.RemoteProtocolError):
            a.get(server.url + "/drop")
    assert proxy.connections_opened == 3
    assert proxy.upstream_connections_opened == 3
    assert proxy.forwarded_requests[0] == url
    assert len(proxy.forwarded_requests) == 10
    assert proxy.connect_requests == []
    assert proxy.errors == server.errors == []


def test_proxy_connect_tunnel(
    tls_server: LoopbackServer, proxy: LoopbackProxy, client_ssl: ssl.SSLContext
) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    with httpx.Client(proxy=proxy.url, verify=client_ssl) as client:
        url = tls_server.url + "/auth"
        assert handshake(client, url).json() == {"user": "alice", "conn": 1, "handshake": True}
        assert client.get(url).json()["handshake"] is False
        assert client.get(tls_server.url + "/stream?chunks=4&size=1000").content == b"x" * 4000
    assert proxy.connect_requests == [f"127.0.0.1:{tls_server.port}"]
    assert proxy.forwarded_requests == []
    assert tls_server.connections_opened == 1
    proxy.reset()
    assert (proxy.connections_opened, proxy.connect_requests) == (0, [])


def test_proxy_auth(server: LoopbackServer) -> None:
    with LoopbackProxy(auth=("user", "pass")) as proxy:
        with httpx.Client(proxy=proxy.url) as client:
            refused = client.get(server.url)
            assert refused.status_code == 407
            assert refused.headers["Proxy-Authenticate"] == 'Basic realm="test"'
        authed = proxy.url.replace("http://", "http://user:pass@")
        with httpx.Client(proxy=authed) as client:
            echo = client.get(server.url + "/echo").json()
            assert "Proxy-Authorization" not in dict(echo["headers"])
        assert proxy.forwarded_requests == [server.url + "/echo"]


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443",
        b"GET http://10.0.0.1:80/ HTTP/1.1\r\nHost: 10.0.0.1",
    ],
)
def test_proxy_refuses_non_loopback(proxy: LoopbackProxy, request_line: bytes) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(request_line + b"\r\n\r\n")
        sock.settimeout(30)  # a hang guard
        assert sock.recv(4096).startswith(b"HTTP/1.1 403 ")
    assert proxy.upstream_connections_opened == 0


def test_echo_json_is_valid_for_raw_clients(server: LoopbackServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        response = raw_get(sock, "/echo")
    body = response.partition(b"\r\n\r\n")[2]
    assert json.loads(body)["headers"] == [["Host", "test"]]


def test_proxy_drops_upstream_when_client_leaves(
    server: LoopbackServer, proxy: LoopbackProxy
) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(f"GET {server.url}/hang HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        assert wait_for(lambda: server.open_connections == 1)
    assert wait_for(lambda: server.open_connections == 0)
    assert wait_for(lambda: proxy.open_connections == 0)
