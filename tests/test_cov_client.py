"""ExClient and ExTransport paths the rest of the suite left out, each as a user meets it.

A per-request ``follow_redirects=`` on the fast path, a second jar taking a pooled response's
cookies, the transport inside a stock ``httpx.AsyncClient``, ``socket_options=`` and ``uds=``,
a response stream closed twice, errors raised by a trace callback or by a stream a response
hook put in place, headers a hook replaced, and an httpcore error from a mocked httpcore.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator

import httpcore
import httpx
import pytest

from httpx_extensions import CONN_ID, ExClient, ExTransport
from httpx_extensions._flavour import SYNC_STREAM_REFUSED

from .conftest import assert_pool_clean
from .servers import LoopbackServer
from .test_client import conn_seq
from .test_http11 import ScriptedServer, reply

pytestmark = pytest.mark.anyio


class _UnixServer:
    """A keep-alive HTTP/1.1 server on a bound socket (here a Unix one): each GET is answered
    ``<path> <n>``, n counting the requests."""

    def __init__(self, sock: socket.socket) -> None:
        self._listener = sock
        self._listener.listen(8)
        self.accepted = 0
        self.requests = 0
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        with sock:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                path = head.split(b" ")[1]
                with self._lock:
                    self.requests += 1
                    self.heads.append(head)
                    body = b"%s %d" % (path, self.requests)
                try:
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                except OSError:
                    return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() (Linux)
        self._listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def unix_server() -> Iterator[tuple[_UnixServer, str]]:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "http.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        server = _UnixServer(sock)
        yield server, path
        server.close()


# _client.py


async def test_cov_client_per_request_follow_redirects_overrides_the_client(
    server: LoopbackServer,
) -> None:
    target = server.url + "/redirect?to=/"
    async with ExClient() as client:  # follow_redirects=False, httpx's default
        followed = await client.get(target, follow_redirects=True)
        assert followed.status_code == 200
        assert followed.text == "Hello, world!"
        assert [r.status_code for r in followed.history] == [302]
        assert_pool_clean(client)
    async with ExClient(follow_redirects=True) as client:
        unfollowed = await client.get(target, follow_redirects=False)
        assert unfollowed.status_code == 302
        assert unfollowed.history == []
        assert unfollowed.next_request is not None
        assert unfollowed.next_request.url == server.url + "/"
        assert_pool_clean(client)


async def test_cov_client_another_jar_takes_a_pooled_responses_cookies(
    server: LoopbackServer,
) -> None:
    scripted = ScriptedServer(
        reply(b"plain"), reply(b"in", headers=[b"Set-Cookie: session=abc; Path=/"])
    ).start()
    try:
        async with ExClient() as client, ExClient() as other:
            plain = await client.get(scripted.url)
            other.cookies.extract_cookies(plain)  # no Set-Cookie: nothing to take
            assert dict(other.cookies) == {}
            with_cookie = await client.get(scripted.url)
            assert client.cookies.get("session") == "abc"
            # A pooled response tells whether its head set a cookie: the other jar trusts it.
            other.cookies.extract_cookies(with_cookie)
            assert other.cookies.get("session") == "abc"
            echoed = await other.get(server.url + "/echo")
            assert ["Cookie", "session=abc"] in echoed.json()["headers"]
            assert_pool_clean(client)
    finally:
        scripted.stop()


# _transport.py


async def test_cov_transport_in_a_stock_httpx_client_reuses_its_connection(
    server: LoopbackServer,
) -> None:
    async with httpx.AsyncClient(transport=ExTransport()) as client:
        first = await client.get(server.url + "/")
        second = await client.get(server.url + "/")
        assert first.text == second.text == "Hello, world!"
        assert conn_seq(first) == conn_seq(second) == 1
        assert first.elapsed.total_seconds() > 0  # httpx's own wrapper timed it
        streamed = await client.send(client.build_request("GET", server.url + "/"), stream=True)
        assert await streamed.aread() == b"Hello, world!"
        await streamed.aclose()
        assert conn_seq(streamed) == 1
    assert server.connections_opened == 1


async def test_cov_transport_stream_closed_twice_releases_once(server: LoopbackServer) -> None:
    async with ExClient() as client:
        response = await client.send(
            client.build_request("GET", server.url + "/stream?chunks=2&size=10"), stream=True
        )
        await response.aread()
        await response.aclose()
        await response.stream.aclose()  # type: ignore[attr-defined]  # a second close: no-op
        assert_pool_clean(client)
        # Released once: the connection is idle and serves the next request.
        again = await client.get(server.url + "/")
        assert conn_seq(again) == conn_seq(response)
        assert len(client.connections) == 1
    assert server.connections_opened == 1


async def test_cov_transport_socket_options_are_set_on_the_connection(
    server: LoopbackServer,
) -> None:
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    async with ExClient(transport=ExTransport(socket_options=options)) as client:
        response = await client.get(server.url + "/")
        assert response.text == "Hello, world!"
        sock = response.extensions["network_stream"].get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert_pool_clean(client)


async def test_cov_transport_uds_connects_to_the_unix_socket(
    unix_server: tuple[_UnixServer, str],
) -> None:
    server, path = unix_server
    async with ExClient(transport=ExTransport(uds=path)) as client:
        # The URL names the origin (Host header, pool key); the bytes go to the socket file.
        first = await client.get("http://example.invalid/one")
        second = await client.get("http://example.invalid/two")
        assert [first.text, second.text] == ["/one 1", "/two 2"]
        assert first.extensions[CONN_ID] == second.extensions[CONN_ID]
        assert_pool_clean(client)
    assert server.accepted == 1
    assert all(b"\r\nHost: example.invalid" in head for head in server.heads)


async def test_cov_transport_trace_callback_error_reaches_the_caller(
    server: LoopbackServer,
) -> None:
    class TraceFailed(Exception):
        pass

    async def trace(name: str, info: dict[str, object]) -> None:
        if name == "http11.receive_response_body.started":
            raise TraceFailed(name)

    async with ExClient() as client:
        url = server.url + "/stream?chunks=2&size=10"
        async with client.stream("GET", url, extensions={"trace": trace}) as response:
            assert response.status_code == 200
            # The application's own error, as raised: not mapped to an httpx error.
            with pytest.raises(TraceFailed, match="receive_response_body"):
                await response.aread()
        assert_pool_clean(client)
        assert client.connections == []  # left mid-body: closed, not reused
        again = await client.get(server.url + "/")
        assert conn_seq(again) == 2


class _CloseFails(httpx.AsyncByteStream):
    """What a response hook may put around the stream: its close fails after the real one."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()
        raise httpx.ReadError("close failed")


async def test_cov_transport_error_closing_a_hook_wrapped_stream_names_the_request(
    server: LoopbackServer,
) -> None:
    async def wrap(response: httpx.Response) -> None:
        if response.request.url.path == "/":
            response.stream = _CloseFails(response.stream)  # type: ignore[arg-type]

    async with ExClient(event_hooks={"response": [wrap]}) as client:
        # Closed unread (a streamed response left early): aclose() is called directly, with no
        # httpx context around it to attach the request, so ExClient's own aclose() does.
        with pytest.raises(httpx.ReadError, match="close failed") as caught:
            async with client.stream("GET", server.url + "/") as response:
                assert response.status_code == 200
        assert caught.value.request is response.request
        assert_pool_clean(client)
        assert (await client.get(server.url + "/echo")).status_code == 200


async def test_cov_transport_sync_stream_put_by_a_hook_is_refused_on_close(
    server: LoopbackServer,
) -> None:
    async def make_sync(response: httpx.Response) -> None:
        await response.aclose()
        response.stream = httpx.SyncByteStream()
        response.is_closed = False

    async with ExClient(event_hooks={"response": [make_sync]}) as client:
        with pytest.raises(RuntimeError, match=re.escape(SYNC_STREAM_REFUSED)):
            await client.get(server.url + "/")
        assert_pool_clean(client)


class _MyHeaders(httpx.Headers):
    """Headers a response hook put in place of httpx's own."""


async def test_cov_transport_hook_replaced_headers_still_decide_the_decoding() -> None:
    body = gzip.compress(b"hello, gzip")
    scripted = ScriptedServer(reply(body, headers=[b"Content-Encoding: gzip"])).start()

    async def replace_headers(response: httpx.Response) -> None:
        response.headers = _MyHeaders(response.headers)

    try:
        async with ExClient(event_hooks={"response": [replace_headers]}) as client:
            response = await client.get(scripted.url)
            assert type(response.headers) is _MyHeaders
            assert response.content == b"hello, gzip"  # decoded, not the raw gzip bytes
            assert response.num_bytes_downloaded == len(body)
            assert_pool_clean(client)
    finally:
        scripted.stop()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cov_transport_httpcore_error_of_a_mocked_httpcore_is_mapped(
    server: LoopbackServer,
) -> None:
    import respx

    async with ExClient() as client:
        with respx.mock() as router:
            router.get("http://respx.test/slow").mock(side_effect=httpcore.ReadTimeout("slow"))
            request = client.build_request("GET", "http://respx.test/slow")
            with pytest.raises(httpx.ReadTimeout, match="slow") as caught:
                await client.send(request)
            assert isinstance(caught.value.__cause__, httpcore.ReadTimeout)
            assert caught.value.request is request
        assert (await client.get(server.url + "/")).status_code == 200
        assert_pool_clean(client)
