"""ExTransport's less travelled paths, as a user meets them: configurations it refuses, a SOCKS
proxy that refuses or hangs up, headers a proxy adds, a URL without a host, and errors a mocked
httpcore (respx) raises."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from httpx_extensions import ExClient, ExTransport, UnsupportedConfiguration

from .conftest import assert_pool_clean
from .servers import LoopbackProxy, LoopbackServer, LoopbackSocksProxy

pytestmark = pytest.mark.anyio


@pytest.fixture
def hang_up_port() -> Iterator[int]:
    """A listener that reads what each connection sends first, then closes it unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)  # the SOCKS greeting (read, so the close is a FIN, not a reset)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(timeout=5)


@pytest.fixture
def refused_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
        yield sock.getsockname()[1]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_transport_refuses_http2_at_construction() -> None:
    with pytest.raises(UnsupportedConfiguration, match="HTTP/2"):
        ExTransport(http2=True)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_transport_socks_proxy_without_socksio_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install httpx-extensions\[socks\]"):
        ExTransport(proxy="socks5://127.0.0.1:1080")


async def test_transport_url_without_host_is_refused_before_any_connection() -> None:
    transport = ExTransport()
    request = httpx.Request("GET", "http:///path")
    with pytest.raises(httpx.UnsupportedProtocol, match="missing a host name") as caught:
        await transport.handle_async_request(request)
    assert caught.value.request is request
    assert transport.connections == []
    await transport.aclose()


async def test_transport_socks_proxy_that_cannot_reach_the_origin(refused_port: int) -> None:
    with LoopbackSocksProxy() as socks:
        async with ExClient(proxy=socks.url) as client:
            with pytest.raises(httpx.ProxyError) as caught:
                await client.get(f"http://127.0.0.1:{refused_port}/")
            message = str(caught.value)
            assert f"could not connect to 127.0.0.1:{refused_port}" in message
            assert "CONNECTION_REFUSED" in message
            assert client.connections == []
        assert socks.connect_requests == [f"127.0.0.1:{refused_port}"]


async def test_transport_socks_proxy_that_hangs_up(
    hang_up_port: int, server: LoopbackServer
) -> None:
    async with ExClient(proxy=f"socks5://127.0.0.1:{hang_up_port}") as client:
        with pytest.raises(httpx.ProxyError, match="SOCKS proxy closed the connection"):
            await client.get(server.url + "/")
        assert client.connections == []
    assert server.log == []


async def test_transport_proxy_headers_go_out_unless_the_request_sets_them(
    server: LoopbackServer,
) -> None:
    with LoopbackProxy() as proxy_server:
        proxy = httpx.Proxy(
            proxy_server.url, headers={"X-Proxy-Route": "east", "User-Agent": "proxy-agent"}
        )
        async with ExClient(proxy=proxy, headers={"User-Agent": "my-app/1.0"}) as client:
            echoed = json.loads((await client.get(server.url + "/echo")).text)
            # One more, so the merge is not a one-off of the first request.
            again = json.loads((await client.get(server.url + "/echo")).text)
            assert_pool_clean(client)
    for payload in (echoed, again):
        headers = [(name.lower(), value) for name, value in payload["headers"]]
        assert ("x-proxy-route", "east") in headers
        assert [v for n, v in headers if n == "user-agent"] == ["my-app/1.0"]
    assert proxy_server.forwarded_requests == [f"{server.url}/echo"] * 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_transport_errors_raised_by_a_mocked_httpcore(server: LoopbackServer) -> None:
    import respx

    async with ExClient() as client:
        with respx.mock() as router:
            router.get("http://respx.test/down").mock(side_effect=httpx.ConnectError("down"))
            router.get("http://respx.test/bug").mock(side_effect=KeyError("bug"))
            with pytest.raises(httpx.ConnectError, match="down") as caught:
                await client.get("http://respx.test/down")
            assert caught.value.request.url == "http://respx.test/down"
            with pytest.raises(KeyError, match="bug"):  # not an httpcore error: as raised
                await client.get("http://respx.test/bug")
        assert (await client.get(server.url + "/")).status_code == 200
        assert_pool_clean(client)
