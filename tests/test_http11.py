"""The HTTP/1.1 client connection (``_http11.py``) through ExClient, on real loopback sockets.

The server here is a scripted raw-socket server: it reads each request (head, and body by
Content-Length or chunked) and answers with the exact bytes a test gives it, optionally split
into segments with pauses between them, closing early, sending extra bytes, or never answering.
It records every byte received per connection, so tests can check what went on the wire and
which connection each request used. The parser's own property (the response is the same
however its bytes are split) is checked by hypothesis over an in-memory stream at the end.
"""

from __future__ import annotations

import contextlib
import gzip
import inspect
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import httpcore
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from httpx_extensions import CONN_ID, ConnectionState, ExClient
from httpx_extensions._http11 import MAX_HEAD_SIZE, HTTP11Connection

from .conftest import assert_pool_clean

pytestmark = pytest.mark.anyio


# The scripted server.


class _Act:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Close the socket now (the kernel sends a reset if request bytes are still unread).
CLOSE = _Act("CLOSE")
#: Send nothing more; keep reading (and recording) until the client closes.
HANG = _Act("HANG")
#: Send back whatever arrives until the client closes (for upgraded connections).
ECHO = _Act("ECHO")
#: Wait for the client's next bytes (recorded, not parsed), then go on.
READ = _Act("READ")
#: Close as servers that answer before reading the body do: stop sending, read and discard
#: for 0.1 s, then close (a reset if the client is still sending).
LINGER = _Act("LINGER")


@dataclass
class Received:
    """One request as the server read it."""

    conn: int  # index of the server-side connection (accept order)
    head: bytes
    body: bytes  # de-chunked
    raw_body: bytes  # as on the wire

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def headers(self) -> dict[bytes, bytes]:
        lines = self.head.split(b"\r\n")[1:]
        return {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(b":") for line in lines if line)
        }


@dataclass(frozen=True)
class Until:
    """Send nothing more until the test sets ``event`` (30 s at most, a hang guard)."""

    event: threading.Event


#: bytes are sent (one send each, TCP_NODELAY), a float is a pause in seconds, an Event is
#: set once the actions before it are done (a test waits on it rather than sleeping), and
#: Until holds the rest back until the test is ready for it.
Action = bytes | float | threading.Event | Until | _Act
Answer = bytes | Sequence[Action]


@dataclass
class ServerConnection:
    index: int
    sock: socket.socket
    recvs: list[bytes] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def received(self) -> bytes:
        return b"".join(self.recvs)


class _Disconnected(Exception):
    pass


class ScriptedServer:
    """A raw HTTP/1.1 server on 127.0.0.1 answering requests with scripted bytes.

    Answers are used in request order across all connections; once they run out, a request
    gets its connection closed. ``greeting`` is played on each new connection before any
    request is read; with ``read_body=False`` the answer goes out as soon as the head is read.
    """

    def __init__(
        self, *answers: Answer, greeting: Sequence[Action] = (), read_body: bool = True
    ) -> None:
        self._answers: deque[Answer] = deque(answers)
        self._greeting = greeting
        self._read_body = read_body
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.connections: list[ServerConnection] = []
        self.requests: list[Received] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.005)  # how often accept() sees stop()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._accepting = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self) -> ScriptedServer:
        self._accepting.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._accepting.join(5)  # no new connections from here on
        self._listener.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        for thread in self._threads:
            thread.join(5)

    def wait_finished(self, connections: int, timeout: float = 30.0) -> None:
        """Wait until ``connections`` were accepted and all are closed (by either side); the
        timeout is a hang guard."""
        deadline = time.monotonic() + timeout
        while len(self.connections) < connections and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(self.connections) == connections
        for conn in list(self.connections):
            assert conn.finished.wait(max(deadline - time.monotonic(), 0)), (
                f"server connection {conn.index} is still open"
            )

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                conn = ServerConnection(len(self.connections), sock)
                self.connections.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: ServerConnection) -> None:
        sock = conn.sock
        buffer = bytearray()

        def fill() -> None:
            data = sock.recv(65536)
            if not data:
                raise _Disconnected
            conn.recvs.append(data)
            buffer.extend(data)

        def line() -> bytes:
            while b"\r\n" not in buffer:
                fill()
            index = buffer.index(b"\r\n")
            out = bytes(buffer[:index])
            del buffer[: index + 2]
            return out

        def take(n: int) -> bytes:
            while len(buffer) < n:
                fill()
            out = bytes(buffer[:n])
            del buffer[:n]
            return out

        try:
            if self._greeting and not self._play(conn, self._greeting):
                return
            while True:
                while b"\r\n\r\n" not in buffer:
                    fill()
                end = buffer.index(b"\r\n\r\n") + 4
                head = bytes(buffer[:end])
                del buffer[:end]
                record = Received(conn.index, head, b"", b"")
                headers = record.headers
                if self._read_body:
                    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                        raw, body = bytearray(), bytearray()
                        while True:
                            size_line = line()
                            raw += size_line + b"\r\n"
                            size = int(size_line.split(b";")[0], 16)
                            data = take(size + 2)
                            raw += data
                            body += data[:-2]
                            if size == 0:
                                break
                        record.raw_body, record.body = bytes(raw), bytes(body)
                    elif b"content-length" in headers:
                        record.body = record.raw_body = take(int(headers[b"content-length"]))
                with self._lock:
                    self.requests.append(record)
                    answer: Answer = self._answers.popleft() if self._answers else [CLOSE]
                if isinstance(answer, bytes):
                    answer = [answer]
                if not self._play(conn, answer):
                    return
        except (_Disconnected, OSError):
            pass
        finally:
            sock.close()
            conn.finished.set()

    def _play(self, conn: ServerConnection, actions: Sequence[Action]) -> bool:
        """Perform the actions; False once the connection is finished."""
        sock = conn.sock
        for action in actions:
            if isinstance(action, bytes):
                sock.sendall(action)
            elif isinstance(action, float):
                time.sleep(action)
            elif isinstance(action, threading.Event):
                action.set()
            elif isinstance(action, Until):
                action.event.wait(30)
            elif action is CLOSE:
                return False
            elif action is READ:
                data = sock.recv(65536)
                if not data:
                    return False
                conn.recvs.append(data)
            elif action is LINGER:
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(0.02)
                deadline = time.monotonic() + 0.1
                while time.monotonic() < deadline:
                    try:
                        if not sock.recv(65536):
                            break
                    except TimeoutError:
                        pass
                return False
            elif action is HANG or action is ECHO:
                while not self._stopping.is_set():
                    data = sock.recv(65536)
                    if not data:
                        break
                    conn.recvs.append(data)
                    if action is ECHO:
                        sock.sendall(data)
                return False
            else:  # pragma: no cover - a typo in a test
                raise AssertionError(f"unknown action {action!r}")
        return True


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(*answers: Answer, **kwargs: Any) -> ScriptedServer:
        server = ScriptedServer(*answers, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def reply(
    body: bytes = b"",
    *,
    status: bytes = b"200 OK",
    headers: Sequence[bytes] = (),
    version: bytes = b"HTTP/1.1",
    length: bool = True,
) -> bytes:
    """A complete response; Content-Length is added unless ``length`` is False."""
    lines = [version + b" " + status, *headers]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def split(data: bytes, *cuts: int, pause: float = 0.01) -> list[Action]:
    """``data`` as separate segments cut at the given offsets, with a pause between each."""
    actions: list[Action] = []
    start = 0
    for cut in (*cuts, len(data)):
        if actions:
            actions.append(pause)
        actions.append(data[start:cut])
        start = cut
    return actions


def client(**kwargs: Any) -> ExClient:
    kwargs.setdefault("timeout", httpx.Timeout(3.0))
    # Plain http:// only: verify=False skips loading the CA bundle (20 ms per client).
    return ExClient(verify=False, **kwargs)


# Keep-alive and framing.


async def test_http11_keepalive_reuses_one_connection(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(reply(b"one"), reply(b"two"), reply(b"three"))
    async with client() as c:
        responses = [await c.get(server.url + f"/{i}?q=1") for i in range(3)]
        assert [r.text for r in responses] == ["one", "two", "three"]
        assert len({r.extensions[CONN_ID] for r in responses}) == 1
        assert [info.requests for info in c.connections] == [3]
        assert {r.extensions["http_version"] for r in responses} == {b"HTTP/1.1"}
        assert responses[0].extensions["reason_phrase"] == b"OK"
        assert_pool_clean(c)
    assert len(server.connections) == 1
    assert [r.conn for r in server.requests] == [0, 0, 0]
    first = server.requests[0]
    assert first.request_line == b"GET /0?q=1 HTTP/1.1"
    assert first.headers[b"host"] == server.url.removeprefix("http://").encode()
    assert first.head.endswith(b"\r\n\r\n")
    assert first.raw_body == b""


async def test_http11_each_request_on_a_reused_connection_sends_its_own_headers(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The header block of the previous request is reused only when the headers are equal.
    server = serve(reply(b"1"), reply(b"2"), reply(b"3"), reply(b"4"), reply(b"5"))
    async with client() as c:
        await c.get(server.url, headers={"X-A": "1"})
        await c.get(server.url, headers={"X-A": "1"})
        await c.get(server.url, headers={"X-A": "2"})
        await c.post(server.url, headers={"X-A": "2"}, content=b"body")
        with pytest.raises(httpx.LocalProtocolError, match="Illegal header value"):
            await c.get(server.url, headers={"X-A": "bad\x01value"})
        await c.get(server.url, headers={"X-A": "2", "Connection": "close"})
        assert c.connections == []  # the last one asked to close: not kept
        assert_pool_clean(c)
    got = [(r.conn, r.request_line, r.headers[b"x-a"], r.body) for r in server.requests]
    assert got == [
        (0, b"GET / HTTP/1.1", b"1", b""),
        (0, b"GET / HTTP/1.1", b"1", b""),
        (0, b"GET / HTTP/1.1", b"2", b""),
        (0, b"POST / HTTP/1.1", b"2", b"body"),
        (1, b"GET / HTTP/1.1", b"2", b""),  # the refused request broke connection 0
    ]
    assert server.requests[-1].headers[b"connection"] == b"close"


async def test_http11_chunked_response_split_at_awkward_points(
    serve: Callable[..., ScriptedServer],
) -> None:
    body = b"hello" + bytes(range(26))
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"5;name=value;x\r\nhello\r\n1A \r\n" + bytes(range(26)) + b"\r\n"
    end = b"0;last\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n"
    data = head + chunks + end
    cuts = (
        len(head) - 1,  # between the head's last CR and LF
        len(head) + 1,  # inside the first size line
        len(head) + 4,  # inside its extension
        len(head) + 15,  # between CR and LF of the size line
        len(head) + 18,  # inside the chunk data
        len(head) + 22,  # between the chunk data's CR and LF
        len(head) + 24,  # between "1" and "A"
        len(head) + 26,  # after the whitespace before CRLF
        len(head) + len(chunks) + 1,  # inside the last-chunk line
        len(data) - 3,  # inside the final CRLF of the trailers
        len(data) - 1,
    )
    server = serve(split(data, *cuts), reply(b"next"))
    async with client() as c:
        response = await c.get(server.url)
        assert response.content == body
        assert "x-trailer" not in response.headers  # trailers are read and dropped
        # The trailers were consumed to their end: the connection carries the next request.
        again = await c.get(server.url)
        assert again.text == "next"
        assert again.extensions[CONN_ID] == response.extensions[CONN_ID]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 0]


async def test_http11_content_length_body_split_in_segments(
    serve: Callable[..., ScriptedServer],
) -> None:
    body = bytes(range(256)) * 40
    data = reply(body)
    body_start = len(data) - len(body)
    cuts = (10, body_start - 1, body_start + 1, len(data) - 5000, len(data) - 1)
    # The pauses split most reads; the last byte waits for the first part to be read, so
    # the body arrives in pieces however slowly this client runs.
    first_read = threading.Event()
    answer = split(data, *cuts)
    answer.insert(-1, Until(first_read))
    server = serve(answer, reply(b"again"))
    async with client() as c:
        async with c.stream("GET", server.url) as response:
            parts = []
            async for part in response.aiter_raw():
                parts.append(part)
                first_read.set()
        assert b"".join(parts) == body
        assert len(parts) > 1  # it really arrived in pieces
        again = await c.get(server.url)
        assert again.text == "again"
        assert again.extensions[CONN_ID] == response.extensions[CONN_ID]
        assert_pool_clean(c)


async def test_http11_bare_lf_line_endings(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(
        b"HTTP/1.1 200 OK\nX-A: b\nContent-Length: 2\n\nhi",
        # Bare LF in the head and trailer section only: chunk lines end in CRLF (RFC 9112 7.1).
        split(b"HTTP/1.1 201 Created\nTransfer-Encoding: chunked\n\n3\r\nabc\r\n0\r\n\n", 40, 45),
        reply(b"third"),
    )
    async with client() as c:
        first = await c.get(server.url)
        assert (first.status_code, first.headers["x-a"], first.content) == (200, "b", b"hi")
        second = await c.get(server.url)
        assert (second.status_code, second.reason_phrase, second.content) == (
            201,
            "Created",
            b"abc",
        )
        third = await c.get(server.url)
        assert third.text == "third"
        assert {r.extensions[CONN_ID] for r in (first, second, third)} == {
            first.extensions[CONN_ID]
        }
        assert_pool_clean(c)


async def test_http11_obsolete_line_folding_joined_with_one_space(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(
        b"HTTP/1.1 200 OK\r\nX-Folded: first\r\n   second\r\n\tthird  \r\n"
        b"X-Next: n\r\nContent-Length: 0\r\n\r\n"
    )
    async with client() as c:
        response = await c.get(server.url)
        assert response.headers["x-folded"] == "first second third"
        assert response.headers["x-next"] == "n"
        assert [k for k, _ in response.headers.raw] == [b"X-Folded", b"X-Next", b"Content-Length"]


async def test_http11_informational_responses_skipped(
    serve: Callable[..., ScriptedServer],
) -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        + reply(b"final", headers=[b"X-Final: yes"])
    )
    server = serve(split(data, 10, 26, 30), reply(b"next"))
    async with client() as c:
        response = await c.get(server.url)
        assert (response.status_code, response.text) == (200, "final")
        assert response.headers["x-final"] == "yes"
        assert "link" not in response.headers  # the 103's headers are not the response's
        again = await c.get(server.url)
        assert again.text == "next"
        assert again.extensions[CONN_ID] == response.extensions[CONN_ID]
        assert_pool_clean(c)


async def test_http11_head_content_length_has_no_body_and_connection_reused(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(
        reply(headers=[b"Content-Length: 1000"], length=False),
        reply(headers=[b"Transfer-Encoding: chunked"], length=False),
        reply(b"body after HEAD"),
    )
    async with client(timeout=httpx.Timeout(1.0)) as c:
        head = await c.head(server.url)
        assert (head.status_code, head.headers["content-length"], head.content) == (
            200,
            "1000",
            b"",
        )
        chunked = await c.head(server.url)
        assert chunked.content == b""
        response = await c.get(server.url)
        assert response.text == "body after HEAD"
        assert {r.extensions[CONN_ID] for r in (head, chunked, response)} == {
            head.extensions[CONN_ID]
        }
        assert_pool_clean(c)
    assert [r.request_line[:5] for r in server.requests] == [b"HEAD ", b"HEAD ", b"GET /"]


async def test_http11_204_and_304_have_no_body(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(
        reply(status=b"204 No Content", length=False),
        # A 304 carries the Content-Length of the representation, not of a body.
        reply(
            status=b"304 Not Modified", headers=[b"Content-Length: 50", b'ETag: "x"'], length=False
        ),
        reply(b"ok"),
    )
    async with client(timeout=httpx.Timeout(1.0)) as c:
        no_content = await c.get(server.url)
        not_modified = await c.get(server.url, headers={"If-None-Match": '"x"'})
        ok = await c.get(server.url)
        assert [(r.status_code, r.content) for r in (no_content, not_modified, ok)] == [
            (204, b""),
            (304, b""),
            (200, b"ok"),
        ]
        assert len({r.extensions[CONN_ID] for r in (no_content, not_modified, ok)}) == 1
        assert_pool_clean(c)


async def test_http11_http10_response_read_to_close_and_not_reused(
    serve: Callable[..., ScriptedServer],
) -> None:
    body = b"no length, " * 500
    data = reply(body, version=b"HTTP/1.0", length=False)
    server = serve([*split(data, 30, 100, 3000), CLOSE], reply(b"fresh"))
    async with client() as c:
        response = await c.get(server.url)
        assert response.content == body
        assert response.extensions["http_version"] == b"HTTP/1.0"
        assert c.connections == []  # read to its end: closed, not pooled
        again = await c.get(server.url)
        assert again.text == "fresh"
        assert again.extensions[CONN_ID] != response.extensions[CONN_ID]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 1]


async def test_http11_http10_with_content_length_not_reused(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The server keeps the connection open: not reusing it is the client's own decision.
    server = serve(reply(b"old", version=b"HTTP/1.0"), reply(b"new"))
    async with client() as c:
        old = await c.get(server.url)
        new = await c.get(server.url)
        assert (old.text, new.text) == ("old", "new")
        assert old.extensions[CONN_ID] != new.extensions[CONN_ID]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 1]


@pytest.mark.parametrize("side", ["response", "request"])
async def test_http11_connection_close_not_reused(
    serve: Callable[..., ScriptedServer], side: str
) -> None:
    # The server leaves the connection open either way: the client must not reuse it.
    extra = [b"Connection: close"] if side == "response" else []
    server = serve(reply(b"first", headers=extra), reply(b"second"), reply(b"third"))
    headers = {"Connection": "close"} if side == "request" else {}
    async with client() as c:
        first = await c.get(server.url, headers=headers)
        second = await c.get(server.url)
        third = await c.get(server.url)
        assert [r.text for r in (first, second, third)] == ["first", "second", "third"]
        assert first.extensions[CONN_ID] != second.extensions[CONN_ID]
        assert second.extensions[CONN_ID] == third.extensions[CONN_ID]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 1, 1]
    if side == "request":
        assert server.requests[0].headers[b"connection"] == b"close"


async def test_http11_extra_bytes_after_response_not_reused(
    serve: Callable[..., ScriptedServer],
) -> None:
    # A response followed by bytes nobody asked for (a second, unrequested response).
    server = serve(reply(b"asked") + reply(b"unasked"), reply(b"next"))
    async with client() as c:
        first = await c.get(server.url)
        assert first.text == "asked"
        second = await c.get(server.url)
        assert second.text == "next"
        assert second.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 1]


async def test_http11_extra_bytes_arriving_while_idle_not_reused(
    serve: Callable[..., ScriptedServer],
) -> None:
    sent = threading.Event()
    server = serve([reply(b"asked"), 0.05, b"garbage", sent], reply(b"next"))
    async with client() as c:
        first = await c.get(server.url)
        assert sent.wait(30)  # the garbage is on the idle connection (a hang guard)
        # asyncio hands bytes to the connection when its loop polls the socket: it does in
        # the first checkpoint, and this task resumes from the second after that.
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        second = await c.get(server.url)
        assert second.text == "next"
        assert second.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(c)


async def test_http11_server_closing_idle_connection_is_replaced(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve([reply(b"first"), 0.05, CLOSE], reply(b"second"))
    async with client() as c:
        first = await c.get(server.url)
        # The server closes the idle keep-alive connection (a hang guard, not a measurement).
        assert server.connections[0].finished.wait(30)
        await anyio.lowlevel.checkpoint()  # the loop polls the socket (asyncio), as above
        await anyio.lowlevel.checkpoint()
        second = await c.get(server.url)
        assert second.text == "second"
        assert second.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert [info.conn_id for info in c.connections] == [second.extensions[CONN_ID]]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 1]


# Errors in the response: an httpx exception that says what was wrong, and a clean pool.


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(
            reply(b"hello", headers=[b"Content-Length: 6"]),
            r"^Conflicting Content-Length values$",
            id="conflicting-content-length",
        ),
        pytest.param(
            reply(b"hello", headers=[b"Transfer-Encoding: gzip"], length=False),
            r"^Unsupported Transfer-Encoding: only chunked is supported$",
            id="transfer-encoding-gzip",
        ),
        pytest.param(
            reply(b"hello", headers=[b"Transfer-Encoding: gzip, chunked"], length=False),
            r"Unsupported Transfer-Encoding",
            id="transfer-encoding-gzip-chunked",
        ),
        pytest.param(
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            r"Invalid status line b'SSH-2.0-OpenSSH_9.6': the server did not answer with HTTP/1.x",
            id="garbage-status-line",
        ),
        pytest.param(
            b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
            r"Invalid status line b'HTTP/1.1 2000 OK'$",
            id="bad-status-code",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",
            r"Invalid header line in the response head: a field name that is not a token",
            id="bad-header-name",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n folded: first\r\nContent-Length: 0\r\n\r\n",
            r"starts with a folded line",
            id="folded-first-line",
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            r"101 Switching Protocols to a request without Upgrade",
            id="101-unasked",
        ),
        pytest.param(
            [reply(b"x" * 40, headers=[b"Content-Length: 100"], length=False), 0.02, CLOSE],
            r"Server disconnected with 60 of 100 body bytes unread",
            id="truncated-content-length",
        ),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", 0.02, CLOSE],
            r"Server disconnected in the middle of a chunk",
            id="truncated-chunk",
        ),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 0.02, CLOSE],
            r"Server disconnected while sending the chunk size",
            id="truncated-before-last-chunk",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            r"Invalid chunk size line b'zz'",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
            r"Invalid chunk size line b'-3'",
            id="negative-chunk-size",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
            r"Chunk data longer than its declared size",
            id="chunk-longer-than-size",
        ),
        pytest.param(
            [b"HTTP/1.1 200 OK\r\nContent-Le", 0.02, CLOSE],
            r"Server disconnected in the middle of the response head",
            id="truncated-head",
        ),
        pytest.param(
            [CLOSE],
            r"^Server disconnected without sending a response\.$",
            id="no-response",
        ),
    ],
)
async def test_http11_invalid_response_raises_remote_protocol_error(
    serve: Callable[..., ScriptedServer], answer: Answer, message: str
) -> None:
    server = serve(answer, reply(b"recovered"))
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match=message):
            await c.get(server.url)
        assert c.connections == []  # the broken connection was closed, not pooled
        assert_pool_clean(c)
        again = await c.get(server.url)
        assert again.text == "recovered"
    assert [r.conn for r in server.requests] == [0, 1]


async def test_http11_response_head_over_max_head_size_refused(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The head never ends: the limit, not a timeout, must stop the client. The limit is
    # httpcore's, 100 KiB (written out: a test reading MAX_HEAD_SIZE would follow a change).
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (100 * 1024 + 10)
    server = serve([big, HANG])
    async with client(timeout=httpx.Timeout(2.0)) as c:
        with pytest.raises(httpx.RemoteProtocolError, match=r"larger than 102400 bytes"):
            await c.get(server.url)
        assert c.connections == []
        assert_pool_clean(c)


async def test_http11_response_head_just_under_max_head_size_accepted(
    serve: Callable[..., ScriptedServer],
) -> None:
    # Negotiate tokens with large PACs need more than h11's 16 KiB.
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: "
    filler = b"a" * (MAX_HEAD_SIZE - len(start) - 4)
    server = serve(start + filler + b"\r\n\r\nok")
    async with client() as c:
        response = await c.get(server.url)
        assert response.text == "ok"
        assert len(response.headers["x-big"]) == len(filler)


# The request side.


@pytest.mark.parametrize(
    "value",
    ["a\r\nX-Injected: 1", "trailing-newline\n", "bare\rcr", " leading-space", "nul\x00"],
)
async def test_http11_invalid_request_header_value_refused_before_sending(
    serve: Callable[..., ScriptedServer], value: str
) -> None:
    server = serve(reply(b"ok"))
    async with client() as c:
        with pytest.raises(httpx.LocalProtocolError, match=r"Illegal header value"):
            await c.get(server.url, headers={"X-Test": value})
        assert_pool_clean(c)
        assert c.connections == []
    server.wait_finished(1)
    assert [conn.received for conn in server.connections] == [b""]  # nothing went out
    assert server.requests == []


async def _body(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if pause:
            await anyio.sleep(pause)
        yield part


# Under trio, a request body generator abandoned mid-iteration (the request failed) is
# finalized with a ResourceWarning; httpx on httpcore does the same.
_ABANDONED_BODY = pytest.mark.filterwarnings(
    "ignore:Async generator .* was garbage collected before it had been exhausted:ResourceWarning"
)


@_ABANDONED_BODY
@pytest.mark.parametrize(
    ("parts", "message"),
    [
        pytest.param(
            (b"abc", b"defg"),
            r"^Request body is 7 bytes long where its Content-Length says 5$",
            id="longer",
        ),
        pytest.param(
            (b"ab", b"c"),
            r"^Request body ended after 3 of the 5 bytes of its Content-Length$",
            id="shorter",
        ),
    ],
)
async def test_http11_streamed_body_not_matching_content_length_refused(
    serve: Callable[..., ScriptedServer], parts: tuple[bytes, ...], message: str
) -> None:
    server = serve(reply(b"never"), read_body=False)
    async with client() as c:
        with pytest.raises(httpx.LocalProtocolError, match=message):
            await c.post(server.url, content=_body(*parts), headers={"Content-Length": "5"})
        assert c.connections == []
        assert_pool_clean(c)
    server.wait_finished(1)
    (conn,) = server.connections
    head, _, body = conn.received.partition(b"\r\n\r\n")
    assert b"content-length: 5" in head.lower()
    assert len(body) <= 5  # never more than it declared


async def test_http11_chunked_upload_arrives_dechunked(
    serve: Callable[..., ScriptedServer],
) -> None:
    parts = (b"first,", b"", b"x" * 70000, b"last")
    server = serve(reply(b"got it"))
    async with client() as c:
        response = await c.post(server.url, content=_body(*parts, pause=0.005))
        assert response.text == "got it"
        assert_pool_clean(c)
    (received,) = server.requests
    assert received.headers[b"transfer-encoding"] == b"chunked"
    assert b"content-length" not in received.headers
    assert received.body == b"".join(parts)
    # The empty part is not sent as a chunk (that would end the body early).
    assert received.raw_body.count(b"\r\n0\r\n\r\n") == 1
    assert received.raw_body.endswith(b"\r\n0\r\n\r\n")


async def test_http11_small_body_sent_with_the_head(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(reply(b"ok"))
    async with client() as c:
        response = await c.post(server.url, content=b"small body")
        assert response.text == "ok"
    (conn,) = server.connections
    # One write: the server's first read already holds the whole request.
    assert conn.recvs[0].endswith(b"\r\n\r\nsmall body")
    assert server.requests[0].body == b"small body"


@_ABANDONED_BODY
async def test_http11_large_upload_answered_early_returns_the_answer(
    serve: Callable[..., ScriptedServer],
) -> None:
    sent = 0
    total_parts = 16384  # 1 GiB: far more than gets through before the server closes

    async def upload() -> AsyncIterator[bytes]:
        nonlocal sent
        part = b"x" * 65536
        for _ in range(total_parts):
            sent += 1
            yield part
            # A real upload source awaits (file or network reads). Without this, under asyncio
            # nothing in the write path yields to the loop while the socket accepts data, and
            # the reset wins the race against reading the 413 (see the test below).
            await anyio.lowlevel.checkpoint()

    too_large = reply(b"too large", status=b"413 Content Too Large", headers=[b"Connection: close"])
    server = serve([too_large, LINGER], reply(b"next"), read_body=False)
    async with client(timeout=httpx.Timeout(5.0)) as c:
        response = await c.post(server.url, content=upload())
        assert (response.status_code, response.text) == (413, "too large")
        assert sent < total_parts  # the upload was cut short, not written out in full
        assert c.connections == []
        assert_pool_clean(c)
        again = await c.get(server.url)
        assert again.text == "next"


@_ABANDONED_BODY
async def test_http11_upload_reset_after_early_answer_returns_the_answer(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The server answers after the head and closes at once; the body bytes it left unread
    # make its kernel send a reset. The kernel keeps the 413 readable for the client.
    too_large = reply(b"too large", status=b"413 Content Too Large", headers=[b"Connection: close"])
    server = serve([too_large, CLOSE], read_body=False)

    async def upload() -> AsyncIterator[bytes]:
        yield b"x" * 65536
        # Block the event loop (deliberately not an await) while the 413 and the reset
        # arrive, so that the next write, not a read, is the first to see the reset.
        time.sleep(0.1)  # noqa: ASYNC251
        for _ in range(64):
            yield b"x" * 65536

    async with client() as c:
        response = await c.post(server.url, content=upload())
        assert (response.status_code, response.text) == (413, "too large")
        assert_pool_clean(c)


# Timeouts and cancellation.


async def test_http11_server_never_answers_read_timeout(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve([HANG])
    async with client(timeout=httpx.Timeout(0.2)) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(server.url)
        assert c.connections == []
        assert_pool_clean(c)
    server.wait_finished(1)  # the client closed the connection
    assert server.requests[0].request_line == b"GET / HTTP/1.1"


async def test_http11_body_stalls_read_timeout(serve: Callable[..., ScriptedServer]) -> None:
    server = serve([reply(b"x" * 10, headers=[b"Content-Length: 100"], length=False), HANG])
    async with client(timeout=httpx.Timeout(0.2)) as c:
        async with c.stream("GET", server.url) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                await response.aread()
        assert c.connections == []
        assert_pool_clean(c)
    server.wait_finished(1)


async def test_http11_shorter_timeout_after_a_longer_one_on_the_same_connection(
    serve: Callable[..., ScriptedServer],
) -> None:
    # One timer per connection serves every wait; a later, shorter timeout must still fire
    # on time rather than at the earlier request's deadline.
    server = serve(reply(b"one"), [HANG])
    async with client(timeout=httpx.Timeout(30.0)) as c:
        assert (await c.get(server.url)).text == "one"
        # Fired at the earlier request's deadline, it would be 30 s: the guard (TimeoutError,
        # not ReadTimeout) catches that without bounding how fast a loaded machine is.
        with anyio.fail_after(20), pytest.raises(httpx.ReadTimeout):
            await c.get(server.url, timeout=0.2)
        assert_pool_clean(c)


async def test_http11_longer_timeout_after_a_shorter_one_on_the_same_connection(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The first request's deadline passes while the second waits within its own: no timeout.
    # (The server pauses longer than the first timeout after the second request arrives, so
    # that deadline has passed whatever the machine's speed; the first request itself only
    # needs to take less than 1 s.)
    server = serve(reply(b"one"), [1.5, reply(b"late")])
    async with client() as c:
        assert (await c.get(server.url, timeout=1.0)).text == "one"
        response = await c.get(server.url, timeout=30.0)
        assert response.text == "late"
        assert len(server.connections) == 1
        assert_pool_clean(c)


# Reading whole bodies (the in-memory fast path of aread) and streaming them.


_GZIPPED = gzip.compress(b"hello, compressed world")


@pytest.mark.parametrize(
    ("answer", "raw", "content"),
    [
        (reply(b"plain body"), b"plain body", b"plain body"),
        (reply(b""), b"", b""),
        (
            reply(_GZIPPED, headers=[b"Content-Encoding: gzip"]),
            _GZIPPED,
            b"hello, compressed world",
        ),
        (
            reply(
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                headers=[b"Transfer-Encoding: chunked"],
                length=False,
            ),
            b"hello world",
            b"hello world",
        ),
        (split(reply(b"x" * 300), 40, 200), b"x" * 300, b"x" * 300),
    ],
    ids=["one-read", "empty", "gzip", "chunked", "arrives-in-parts"],
)
async def test_http11_read_and_streamed_responses_agree(
    serve: Callable[..., ScriptedServer], answer: Answer, raw: bytes, content: bytes
) -> None:
    server = serve(answer, answer)
    async with client() as c:
        read = await c.get(server.url)
        assert read.content == content
        assert read.num_bytes_downloaded == len(raw)
        assert read.is_stream_consumed
        assert read.is_closed
        assert read.elapsed.total_seconds() > 0  # set when the body was read, not left at 0
        assert [info.state for info in c.connections] == [ConnectionState.IDLE]  # given back
        async with c.stream("GET", server.url) as streamed:
            assert not streamed.is_closed
            assert b"".join([part async for part in streamed.aiter_raw()]) == raw
            assert streamed.num_bytes_downloaded == len(raw)
        assert streamed.extensions[CONN_ID] == read.extensions[CONN_ID]
        with pytest.raises(httpx.StreamConsumed):
            await streamed.aread()
        assert_pool_clean(c)


async def test_http11_body_read_by_a_response_hook_is_the_content(
    serve: Callable[..., ScriptedServer],
) -> None:
    seen: list[bytes] = []

    async def hook(response: httpx.Response) -> None:
        assert not response.is_closed  # hooks run before the body is read, as in httpx
        seen.append(await response.aread())

    server = serve(reply(b"once"))
    async with client(event_hooks={"response": [hook]}) as c:
        response = await c.get(server.url)
        assert response.content == b"once"
        assert seen == [b"once"]
        assert response.num_bytes_downloaded == 4
        assert_pool_clean(c)


@pytest.mark.parametrize("where", ["head", "body"])
async def test_http11_cancelled_request_leaves_pool_clean(
    serve: Callable[..., ScriptedServer], where: str
) -> None:
    if where == "head":
        answer: list[Action] = [b"HTTP/1.1 200 OK\r\nContent-", HANG]
    else:
        answer = [reply(b"x" * 100, headers=[b"Content-Length: 1000"], length=False), HANG]
    server = serve(answer, reply(b"after"))
    got: list[bytes] = []
    async with client() as c:
        with anyio.move_on_after(0.3) as scope:
            async with c.stream("GET", server.url) as response:
                async for part in response.aiter_raw():
                    got.append(part)
        assert scope.cancelled_caught
        assert b"".join(got) == (b"x" * 100 if where == "body" else b"")
        assert c.connections == []  # closed, not pooled mid-response
        assert_pool_clean(c)
        server.wait_finished(1)  # and really closed
        again = await c.get(server.url)
        assert again.text == "after"
        assert_pool_clean(c)


# Trace events and logging.


async def test_http11_trace_events_in_order(serve: Callable[..., ScriptedServer]) -> None:
    challenge = b"WWW-Authenticate: Negotiate abcdef"
    server = serve(reply(b"body", headers=[challenge]), [CLOSE])
    events: list[tuple[str, dict[str, Any]]] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        events.append((name, info))

    async with client() as c:
        response = await c.post(server.url, content=b"data", extensions={"trace": trace})
        assert response.text == "body"
        # httpcore's http11 events, in httpcore's order.
        assert [name for name, _ in events] == [
            "http11.send_request_headers.started",
            "http11.send_request_headers.complete",
            "http11.send_request_body.started",
            "http11.send_request_body.complete",
            "http11.receive_response_headers.started",
            "http11.receive_response_headers.complete",
            "http11.receive_response_body.started",
            "http11.receive_response_body.complete",
            "http11.response_closed.started",
            "http11.response_closed.complete",
        ]
        version, status, reason, headers = dict(events)["http11.receive_response_headers.complete"][
            "return_value"
        ]
        assert (version, status, reason) == (b"HTTP/1.1", 200, b"OK")
        # The callback is the caller's own: it sees the real values (only logs redact them).
        assert (b"WWW-Authenticate", b"Negotiate abcdef") in headers

        events.clear()
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(server.url, extensions={"trace": trace})
        names = [name for name, _ in events]
        failed = names.index("http11.receive_response_headers.failed")
        assert names[failed - 1] == "http11.receive_response_headers.started"
        assert isinstance(events[failed][1]["exception"], httpcore.RemoteProtocolError)
        assert_pool_clean(c)


async def test_http11_trace_started_info_carries_the_request(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(reply(b"body"))
    requests: list[Any] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name.endswith(".started") and "request" in info:
            requests.append(info["request"])

    async with client() as c:
        await c.get(server.url + "/path", extensions={"trace": trace})
    assert requests
    assert all(r.method == b"GET" and r.url.target == b"/path" for r in requests)


async def test_http11_debug_log_redacts_auth_headers(
    serve: Callable[..., ScriptedServer], caplog: pytest.LogCaptureFixture
) -> None:
    challenge = b"WWW-Authenticate: Negotiate abcdef"
    server = serve(reply(b"", status=b"401 Unauthorized", headers=[challenge]))
    with caplog.at_level(logging.DEBUG, logger="httpx_extensions.http11"):
        async with client() as c:
            response = await c.get(server.url, headers={"Authorization": "Secret-Token-123"})
    # The values still go on the wire and reach the caller...
    assert server.requests[0].headers[b"authorization"] == b"Secret-Token-123"
    assert response.headers["www-authenticate"] == "Negotiate abcdef"
    # ...but not into the log, which does show the exchange.
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        "receive_response_headers.complete" in m and "WWW-Authenticate" in m and "[redacted]" in m
        for m in messages
    ), messages
    assert not [m for m in messages if "Secret-Token-123" in m or "abcdef" in m]


async def test_http11_debug_log_redacts_refused_auth_header(
    serve: Callable[..., ScriptedServer], caplog: pytest.LogCaptureFixture
) -> None:
    # A token read from a file with its newline: refused, and the log must not show it.
    server = serve(reply(b""))
    with caplog.at_level(logging.DEBUG, logger="httpx_extensions.http11"):
        async with client() as c:
            with pytest.raises(httpx.LocalProtocolError):
                await c.get(server.url, headers={"Authorization": "Secret-Token-123\n"})
    messages = [record.getMessage() for record in caplog.records]
    assert any("send_request_headers.failed" in m for m in messages), messages
    assert not [m for m in messages if "Secret-Token-123" in m]


async def test_http11_traced_request_reads_answer_sent_before_request(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The server answers on connect and closes (an overloaded server's 503). The trace
    # callback holds the request back until that answer is in: writing the head then fails
    # under asyncio (the transport is closed), and the answer must still be read, as
    # without tracing (send()) and in httpcore.
    unavailable = reply(b"busy", status=b"503 Service Unavailable", headers=[b"Connection: close"])
    server = serve(greeting=[unavailable, CLOSE])

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name == "http11.send_request_headers.started":
            await anyio.sleep(0.2)

    async with client() as c:
        response = await c.get(server.url, extensions={"trace": trace})
        assert (response.status_code, response.text) == (503, "busy")
        assert_pool_clean(c)


# Upgrades.


async def test_http11_upgrade_hands_over_stream_with_early_bytes_first(
    serve: Callable[..., ScriptedServer],
) -> None:
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
    server = serve([switching + b"EARLY", ECHO], reply(b"after"))
    headers = {"Upgrade": "echo", "Connection": "Upgrade"}
    async with client() as c:
        async with c.stream("GET", server.url, headers=headers) as response:
            assert response.status_code == 101
            stream = response.extensions["network_stream"]
            assert await stream.read(2) == b"EA"  # what came with the head, first
            assert await stream.read(100) == b"RLY"
            await stream.write(b"ping")
            assert await stream.read(100) == b"ping"
        assert c.connections == []  # out of HTTP: closed with the response, never reused
        assert_pool_clean(c)
        server.wait_finished(1)
        again = await c.get(server.url)
        assert again.text == "after"


# Where this parser is more lenient than h11, and should not be.


@pytest.mark.parametrize("continuation", [b" \x00evil", b" bare\rcr"])
async def test_http11_folded_line_with_control_character_refused(
    serve: Callable[..., ScriptedServer], continuation: bytes
) -> None:
    server = serve(
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n" + continuation + b"\r\nContent-Length: 0\r\n\r\n"
    )
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match=r"header"):
            await c.get(server.url)
        assert_pool_clean(c)


async def test_http11_status_below_100_refused(serve: Callable[..., ScriptedServer]) -> None:
    server = serve([b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", HANG])
    async with client(timeout=httpx.Timeout(30)) as c:  # a hang guard: refused on arrival
        with pytest.raises(httpx.RemoteProtocolError, match=r"099"):
            await c.get(server.url)
        assert_pool_clean(c)


@pytest.mark.parametrize("header", [b"Content-Length: ", b"Transfer-Encoding: "])
async def test_http11_empty_framing_header_refused(
    serve: Callable[..., ScriptedServer], header: bytes
) -> None:
    server = serve([reply(b"body", headers=[header], length=False), HANG])
    async with client(timeout=httpx.Timeout(30)) as c:  # a hang guard: refused on arrival
        with pytest.raises(httpx.RemoteProtocolError, match=header.split(b":")[0].decode()):
            await c.get(server.url)
        assert_pool_clean(c)


async def test_http11_conflicting_request_content_length_refused(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(reply(b"ok"))
    headers = [("Content-Length", "5"), ("Content-Length", "3")]
    async with client() as c:
        with pytest.raises(httpx.LocalProtocolError, match=r"Content-Length"):
            await c.post(server.url, content=b"abc", headers=headers)
        assert_pool_clean(c)
    server.wait_finished(1)
    assert server.connections[0].received == b""


async def test_http11_head_accepted_by_httpx_accepted(
    serve: Callable[..., ScriptedServer],
) -> None:
    big = reply(b"ok", headers=[b"X-Big: " + b"a" * (90 * 1024)])
    server = serve(big, big)
    async with httpx.AsyncClient(verify=False) as stock:
        assert (await stock.get(server.url)).text == "ok"  # httpx itself reads it
    async with client() as c:
        assert (await c.get(server.url)).text == "ok"


# The parser itself: the response is the same however its bytes are split.
#
# This drives HTTP11Connection directly over an in-memory stream: segmentation is a property
# of the parser, not of the network, and an in-memory stream lets hypothesis choose every
# split point (TCP on loopback would coalesce segments at will) and run 100 examples in well
# under a second. The stream never blocks, so the coroutines run to completion without an
# event loop.


class _SegmentStream(httpcore.AsyncNetworkStream):
    def __init__(self, segments: list[bytes]) -> None:
        self._segments = deque(segments)
        self.written: list[bytes] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if not self._segments:
            return b""
        segment = self._segments.popleft()
        if len(segment) > max_bytes:
            self._segments.appendleft(segment[max_bytes:])
            segment = segment[:max_bytes]
        return segment

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written.append(buffer)

    async def aclose(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        return None


def _run(coroutine: Any) -> Any:
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise AssertionError("the parser waited on something other than its stream")


async def _exchange(segments: list[bytes]) -> tuple[Any, ...]:
    stream = _SegmentStream(segments)
    connection = HTTP11Connection(httpcore.Origin(b"http", b"example.com", 80), stream)
    head = await connection.send(b"GET", b"/", [(b"Host", b"example.com")], [], {})
    body = b"".join([part async for part in head.stream])
    assert stream.written == [b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"]
    return head.status, head.reason, head.headers, body, connection.is_idle()


@st.composite
def _responses(draw: st.DrawFn) -> tuple[bytes, tuple[Any, ...]]:
    """Raw response bytes, and what parsing them must give."""
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    raw = b""
    if draw(st.booleans()):
        raw += b"HTTP/1.1 100 Continue" + eol + eol
    if draw(st.booleans()):
        raw += b"HTTP/1.1 103 Early Hints" + eol + b"Link: </a.css>" + eol + eol
    raw += b"HTTP/1.1 200 OK" + eol + b"X-Folded: one" + eol + b"  two" + eol
    headers = [(b"X-Folded", b"one two")]
    if framing == "length":
        raw += b"Content-Length: %d" % len(body) + eol + eol + body
        headers.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        raw += b"Transfer-Encoding: chunked" + eol + eol
        headers.append((b"Transfer-Encoding", b"chunked"))
        cuts = sorted(draw(st.sets(st.integers(1, max(len(body) - 1, 1)), max_size=6)))
        start = 0
        for end in [*(c for c in cuts if c < len(body)), len(body)]:
            piece = body[start:end]
            if piece:
                extension = draw(st.sampled_from([b"", b";a=b", b" ;x"]))
                raw += b"%x" % len(piece) + extension + b"\r\n" + piece + b"\r\n"
            start = end
        raw += b"0\r\n"
        if draw(st.booleans()):
            raw += b"X-Trailer: t" + eol
        raw += eol
    else:
        raw += eol + body
    return raw, (200, b"OK", headers, body, framing != "close")


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(response=_responses(), data=st.data())
def test_http11_parse_same_however_split(response: tuple[bytes, Any], data: st.DataObject) -> None:
    raw, expected = response
    cuts = sorted(data.draw(st.sets(st.integers(1, len(raw) - 1), max_size=12)))
    segments = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert _run(_exchange(segments)) == expected
    assert _run(_exchange([raw])) == expected
    # One byte at a time: every possible split at once.
    assert _run(_exchange([raw[i : i + 1] for i in range(len(raw))])) == expected


def _sent(value: Any) -> Any:
    # The coroutine of an in-memory exchange driven to its end (in the generated sync tests
    # the call has already returned its value).
    return _run(value) if inspect.iscoroutine(value) else value


async def _exchange_post(
    stream: _SegmentStream, connection: HTTP11Connection, length: int, body: list[bytes]
) -> int:
    headers = [(b"Host", b"example.com"), (b"Content-Length", b"%d" % length)]
    head = await connection.send(b"POST", b"/", headers, body, {})
    return head.status


def test_http11_small_body_in_memory_goes_out_with_the_head_in_one_write() -> None:
    # One write: one syscall, and no small segment left waiting on the peer's delayed ACK.
    stream = _SegmentStream([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    connection = HTTP11Connection(httpcore.Origin(b"http", b"example.com", 80), stream)
    assert _sent(_exchange_post(stream, connection, 4, [b"ab", b"cd"])) == 200
    assert stream.written == [
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nabcd"
    ]


def test_http11_in_memory_body_of_another_length_is_refused_unsent() -> None:
    stream = _SegmentStream([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    connection = HTTP11Connection(httpcore.Origin(b"http", b"example.com", 80), stream)
    with pytest.raises(httpcore.LocalProtocolError):
        _sent(_exchange_post(stream, connection, 5, [b"ab", b"cd"]))
    assert stream.written == []
    assert not connection.is_idle()  # mid-request: the pool closes it
