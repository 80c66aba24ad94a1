"""httpx2's additions that ride on the pool: ``client.websocket()`` (a 101 upgrade taken over
from our connection) and ``client.sse()``, with the httpx2 ExClient beside stock httpx2.

The WebSocket peer is wsproto's server state machine on a real loopback socket, in a thread,
so asyncio and trio clients can both drive it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpcore2
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

import httpx2
from httpx_extensions import CONN_ID
from httpx_extensions.httpx2 import ExClient

pytestmark = pytest.mark.anyio

CLIENTS = [httpx2.AsyncClient, ExClient]


class EchoWebSocketServer:
    """Accepts WebSocket upgrades and echoes text messages as ``echo <text>``; a message
    ``silence`` gets no answer (for read timeouts)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.upgrades: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> EchoWebSocketServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(sock,), daemon=True).start()

    def _connection(self, sock: socket.socket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        with sock:
            while data := sock.recv(65536):
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        self.upgrades.append(event.target)
                        sock.sendall(ws.send(AcceptConnection()))
                    elif isinstance(event, TextMessage) and event.data != "silence":
                        sock.sendall(ws.send(TextMessage(data="echo " + event.data)))
                    elif isinstance(event, CloseConnection):
                        sock.sendall(ws.send(event.response()))
                        return


@pytest.fixture
def ws_server() -> Iterator[EchoWebSocketServer]:
    with EchoWebSocketServer() as server:
        yield server


@pytest.mark.parametrize("client_class", CLIENTS, ids=lambda c: c.__name__)
async def test_upgrades_websocket_session_as_stock_httpx2(
    ws_server: EchoWebSocketServer, client_class: type[httpx2.AsyncClient]
) -> None:
    async with client_class() as client:
        async with client.websocket(f"ws://127.0.0.1:{ws_server.port}/chat") as ws:
            await ws.send_text("hello")
            assert await ws.receive_text() == "echo hello"
            await ws.send_text("again")
            assert await ws.receive_text() == "echo again"
            if client_class is ExClient:
                assert ws.response.extensions[CONN_ID] >= 1
        if client_class is ExClient:
            # The upgraded connection is the session's, never back in the pool.
            assert client.connections == []  # type: ignore[attr-defined]
    assert ws_server.upgrades == ["/chat"]


@pytest.mark.parametrize("client_class", CLIENTS, ids=lambda c: c.__name__)
async def test_upgrades_upgraded_stream_raises_httpcore2_errors(
    ws_server: EchoWebSocketServer, client_class: type[httpx2.AsyncClient]
) -> None:
    # httpx2's websocket layer catches httpcore2's exceptions from the network stream it took
    # over; ours must raise those classes, not httpx's or our own.
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    async with (
        client_class() as client,
        client.stream("GET", f"http://127.0.0.1:{ws_server.port}/raw", headers=headers) as response,
    ):
        assert response.status_code == 101
        stream = response.extensions["network_stream"]
        with pytest.raises(httpcore2.ReadTimeout) as caught:
            await stream.read(1024, timeout=0.05)
        assert type(caught.value) is httpcore2.ReadTimeout
        await stream.aclose()


class EventStreamServer:
    """Answers every request with three server-sent events (keep-alive, Content-Length) and
    records the request heads."""

    BODY = b"event: greeting\ndata: hello\n\ndata: line one\ndata: line two\n\nid: 3\ndata: bye\n\n"

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.heads: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> EventStreamServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(sock,), daemon=True).start()

    def _connection(self, sock: socket.socket) -> None:
        buffer = b""
        with sock:
            while data := sock.recv(65536):
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    self.heads.append(head)
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(self.BODY) + self.BODY
                    )


@pytest.mark.parametrize("client_class", CLIENTS, ids=lambda c: c.__name__)
async def test_upgrades_sse_events_as_stock_httpx2(client_class: type[httpx2.AsyncClient]) -> None:
    with EventStreamServer() as sse_server:
        async with client_class() as client:
            for _ in range(2):
                async with client.sse(sse_server.url + "/events") as source:
                    events = [(e.event, e.data, e.id) async for e in source]
                assert events == [
                    ("greeting", "hello", ""),
                    ("message", "line one\nline two", ""),
                    ("message", "bye", "3"),
                ]
            if client_class is ExClient:
                assert [c.state.name for c in client.connections] == ["IDLE"]  # type: ignore[attr-defined]
    assert len(sse_server.heads) == 2  # the second on the kept-alive connection
    head = sse_server.heads[0].lower()
    assert b"\r\naccept: text/event-stream" in head
    assert b"\r\ncache-control: no-store" in head


@pytest.mark.parametrize("client_class", CLIENTS, ids=lambda c: c.__name__)
async def test_upgrades_query_method_as_stock_httpx2(
    client_class: type[httpx2.AsyncClient],
) -> None:
    # httpx2's client.query(): the body goes out with the QUERY method (the event-stream
    # server records the head; its answer is beside the point here).
    with EventStreamServer() as server:
        async with client_class() as client:
            response = await client.query(server.url + "/search", content=b"q=1")
            assert response.status_code == 200
            empty = await client.query(server.url + "/search")
            assert empty.status_code == 200
    assert server.heads[0].startswith(b"QUERY /search HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 3" in server.heads[0].lower()
    assert b"\r\ncontent-length: 0" in server.heads[1].lower()
