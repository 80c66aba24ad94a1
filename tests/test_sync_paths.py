"""The paths of ExSyncClient and ExSyncTransport a threaded user walks into: timeouts (read,
pool), keep-alive expiry on either side, pins to connections that closed or expired, SOCKS5
and HTTP proxies, connect retries and socket options, streaming, and the transport's argument
checks. Real loopback servers; each test asserts what the user sees."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from httpx_extensions import (
    CONN_ID,
    ConnectionState,
    ExSyncClient,
    ExSyncTransport,
    UnsupportedConfiguration,
)

from .servers import LoopbackProxy, LoopbackServer, LoopbackSocksProxy
from .test_sync_client import assert_pool_clean


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A TCP listener that accepts (through the backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"https://127.0.0.1:{sock.getsockname()[1]}/"


# Timeouts.


def test_sync_paths_read_timeout_closes_the_connection(server: LoopbackServer) -> None:
    with ExSyncClient(timeout=httpx.Timeout(10, read=0.2)) as client:
        first = client.get(server.url + "/")
        with pytest.raises(httpx.ReadTimeout):
            client.get(server.url + "/hang")
        assert_pool_clean(client)
        after = client.get(server.url + "/")  # not on the connection that timed out
        assert after.status_code == 200
        assert after.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(client)


def test_sync_paths_pool_timeout_of_a_pinned_request(server: LoopbackServer) -> None:
    with ExSyncClient(timeout=httpx.Timeout(10, pool=0.2)) as client:
        with client.stream("GET", server.url + "/") as held:
            conn_id = held.extensions[CONN_ID]
            with pytest.raises(httpx.PoolTimeout, match="pool timeout"):
                client.get(server.url + "/", extensions={CONN_ID: conn_id})
            held.read()
        assert client._transport.pool.waiting == 0  # type: ignore[attr-defined]
        assert client.get(server.url + "/", extensions={CONN_ID: conn_id}).status_code == 200
        assert_pool_clean(client)


# Keep-alive.


def test_sync_paths_keepalive_expiry_replaces_an_idle_connection(server: LoopbackServer) -> None:
    limits = httpx.Limits(keepalive_expiry=0.05)
    with ExSyncClient(limits=limits) as client:
        first = client.get(server.url + "/")
        time.sleep(0.3)  # well past the expiry
        second = client.get(server.url + "/")
        assert second.status_code == 200
        assert second.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert len(client.connections) == 1  # the expired one was closed, not kept
        assert_pool_clean(client)


def test_sync_paths_server_closed_idle_connection_is_not_reused() -> None:
    with LoopbackServer(idle_timeout=0.1) as server, ExSyncClient() as client:
        first = client.get(server.url + "/")
        deadline = time.monotonic() + 10
        while server.open_connections:  # until the server has closed it
            assert time.monotonic() < deadline, "the server never closed the idle connection"
            time.sleep(0.01)
        second = client.get(server.url + "/")
        assert second.status_code == 200
        assert second.headers["X-Conn-Seq"] == "2"
        assert second.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(client)


def test_sync_paths_max_keepalive_connections_closes_the_surplus(server: LoopbackServer) -> None:
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=1)
    with ExSyncClient(limits=limits) as client:
        streams = [client.stream("GET", server.url + "/") for _ in range(3)]
        responses = [stream.__enter__() for stream in streams]
        assert len({r.extensions[CONN_ID] for r in responses}) == 3
        for stream, response in zip(streams, responses, strict=True):
            response.read()
            stream.__exit__(None, None, None)
        assert [info.state for info in client.connections] == [ConnectionState.IDLE]
        assert_pool_clean(client)


# Pins to connections that went away.


def test_sync_paths_pin_to_a_connection_the_server_closed_falls_back(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    with ExSyncClient() as client, caplog.at_level(logging.WARNING, "httpx_extensions.pool"):
        closed = client.get(server.url + "/close")  # the server closes after answering
        pinned = client.get(server.url + "/", extensions={CONN_ID: closed.extensions[CONN_ID]})
        assert pinned.status_code == 200
        assert pinned.extensions[CONN_ID] != closed.extensions[CONN_ID]
        assert_pool_clean(client)
    assert f"conn_id {closed.extensions[CONN_ID]}" in caplog.text


def test_sync_paths_pin_to_an_expired_connection_falls_back(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    limits = httpx.Limits(keepalive_expiry=0.05)
    with (
        ExSyncClient(limits=limits) as client,
        caplog.at_level(logging.WARNING, "httpx_extensions.pool"),
    ):
        first = client.get(server.url + "/")
        time.sleep(0.3)
        pinned = client.get(server.url + "/", extensions={CONN_ID: first.extensions[CONN_ID]})
        assert pinned.status_code == 200
        assert pinned.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(client)
    assert "has expired" in caplog.text


def test_sync_paths_pinned_waiter_falls_back_when_its_connection_closes(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    with ExSyncClient(timeout=30) as client, caplog.at_level(logging.WARNING):
        got: list[httpx.Response] = []
        with client.stream("GET", server.url + "/close") as held:
            conn_id = held.extensions[CONN_ID]
            waiter = threading.Thread(
                target=lambda: got.append(
                    client.get(server.url + "/", extensions={CONN_ID: conn_id})
                )
            )
            waiter.start()
            while client._transport.pool.waiting == 0:  # type: ignore[attr-defined]
                waiter.join(0.01)
            held.read()  # "Connection: close": the pinned connection goes away
        waiter.join(10)
        assert [r.status_code for r in got] == [200]
        assert got[0].extensions[CONN_ID] != conn_id
        assert_pool_clean(client)
    assert f"conn_id {conn_id} closed while waiting for it" in caplog.text


# Proxies.


def test_sync_paths_socks5_proxy(
    server: LoopbackServer, https_server: LoopbackServer, client_ssl_context: ssl.SSLContext
) -> None:
    with (
        LoopbackSocksProxy() as socks,
        ExSyncClient(proxy=socks.url, verify=client_ssl_context) as client,
    ):
        plain = [client.get(server.url + "/") for _ in range(3)]
        tls = client.get(https_server.url + "/")
        assert [r.status_code for r in (*plain, tls)] == [200] * 4
        assert len({r.extensions[CONN_ID] for r in plain}) == 1  # kept alive through SOCKS
        assert socks.connect_requests == [
            f"127.0.0.1:{server.port}",
            f"127.0.0.1:{https_server.port}",
        ]
        assert_pool_clean(client)


def test_sync_paths_socks5_proxy_credentials(server: LoopbackServer) -> None:
    with LoopbackSocksProxy(auth=("user", "pass")) as socks:
        good = socks.url.replace("socks5://", "socks5://user:pass@")
        with ExSyncClient(proxy=good) as client:
            assert client.get(server.url + "/").status_code == 200
        bad = socks.url.replace("socks5://", "socks5://user:wrong@")
        with ExSyncClient(proxy=bad) as client:
            with pytest.raises(httpx.ProxyError, match="rejected the username or password"):
                client.get(server.url + "/")
            assert client.connections == []
        with ExSyncClient(proxy=socks.url) as client:
            with pytest.raises(httpx.ProxyError, match="refused authentication method"):
                client.get(server.url + "/")
            assert client.connections == []


def test_sync_paths_proxy_from_16_threads_keeps_one_tunnel_per_connection(
    https_server: LoopbackServer, proxy: LoopbackProxy, client_ssl_context: ssl.SSLContext
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    limits = httpx.Limits(max_connections=4)
    with ExSyncClient(
        proxy=proxy.url, verify=client_ssl_context, limits=limits, timeout=30
    ) as client:
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: client.get(https_server.url + "/"), range(200)))
        assert [r.status_code for r in responses] == [200] * 200
        conns = {r.extensions[CONN_ID] for r in responses}
        assert len(conns) <= 4
        assert len(proxy.connect_requests) == len(conns)  # one CONNECT per connection
        assert_pool_clean(client)


# Connecting.


def test_sync_paths_connect_retries_reach_a_server_that_comes_up_late() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening yet: connects are refused
    port = sock.getsockname()[1]

    def come_up_late() -> None:
        time.sleep(0.2)
        sock.listen(1)
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    try:
        with ExSyncClient(transport=ExSyncTransport(retries=0)) as client:
            with pytest.raises(httpx.ConnectError):
                client.get(f"http://127.0.0.1:{port}/")
            assert client.connections == []
        thread = threading.Thread(target=come_up_late)
        thread.start()
        with ExSyncClient(transport=ExSyncTransport(retries=3)) as client:
            assert client.get(f"http://127.0.0.1:{port}/").text == "ok"
            assert_pool_clean(client)
        thread.join()
    finally:
        sock.close()


def test_sync_paths_socket_options_and_local_address(server: LoopbackServer) -> None:
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    transport = ExSyncTransport(socket_options=options, local_address="127.0.0.1")
    with ExSyncClient(transport=transport) as client:
        response = client.get(server.url + "/")
        stream = response.extensions["network_stream"]
        assert stream.get_extra_info("client_addr")[0] == "127.0.0.1"
        sock = stream.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


def test_sync_paths_failing_socket_option_is_a_connect_error(silent_listener: str) -> None:
    # A bare listener, not the asyncio test server: a connection closed this fast as that
    # server stops can leave its server-side socket unclosed (a test-server race).
    bad = ExSyncTransport(socket_options=[(socket.SOL_SOCKET, 9999, 1)])
    with ExSyncClient(transport=bad) as client:
        with pytest.raises(httpx.ConnectError, match="could not set a socket option"):
            client.get(silent_listener.replace("https://", "http://"))
        assert client.connections == []


def test_sync_paths_connect_timeout_in_the_tls_handshake_frees_the_slot(
    silent_listener: str,
) -> None:
    with ExSyncClient(limits=httpx.Limits(max_connections=1)) as client:
        for _ in range(2):  # the slot comes back each time
            with pytest.raises(httpx.ConnectTimeout):
                client.get(silent_listener, timeout=httpx.Timeout(5, connect=0.1))
            assert client.connections == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"retries": -1}, ValueError, "retries must be a whole number"),
        ({"retries": True}, ValueError, "retries must be a whole number"),
        ({"limits": {"max_connections": 1}}, TypeError, r"limits must be an httpx\.Limits"),
        ({"http1": False}, UnsupportedConfiguration, "HTTP/1.1"),
        ({"http2": True}, UnsupportedConfiguration, "HTTP/2"),
        ({"limits": httpx.Limits(max_connections=0)}, UnsupportedConfiguration, "max_connections"),
        (
            {"limits": httpx.Limits(keepalive_expiry=0)},
            UnsupportedConfiguration,
            "keepalive_expiry",
        ),
        (
            {"limits": httpx.Limits(max_keepalive_connections=0)},
            UnsupportedConfiguration,
            "max_keepalive_connections",
        ),
    ],
)
def test_sync_paths_bad_transport_arguments_say_what_to_do(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ExSyncTransport(**kwargs)  # type: ignore[arg-type]


def test_sync_paths_unsupported_scheme_is_refused(server: LoopbackServer) -> None:
    with ExSyncClient() as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            client.get("ftp://127.0.0.1/")
        assert client.connections == []


# Streaming.


def test_sync_paths_streaming_chunked_lines_and_head(server: LoopbackServer) -> None:
    with ExSyncClient() as client:
        with client.stream("GET", server.url + "/stream?chunks=20&size=100") as response:
            parts = list(response.iter_bytes(chunk_size=256))
            assert b"".join(parts) == b"x" * 2000
            assert response.num_bytes_downloaded == 2000
        with client.stream("GET", server.url + "/stream?chunks=5&size=10") as response:
            assert list(response.iter_text()) != []
        head = client.head(server.url + "/stream?chunks=5&size=10")
        assert (head.status_code, head.content) == (200, b"")
        with client.stream("GET", server.url + "/stream?chunks=3&size=10") as response:
            pass  # closed unread: the rest is not pooled mid-body
        assert response.is_closed
        with pytest.raises(httpx.StreamClosed):
            list(response.iter_raw())
        after = client.get(server.url + "/")
        assert after.status_code == 200
        assert_pool_clean(client)
