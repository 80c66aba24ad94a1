"""The loopback test servers (``httpx_extensions.testing``) where a client or a server's own
code misbehaves: what the rest of the suite left out (issue 14 item 5).

A server built on the loopback machinery records a bug of its own (an exception in a handler,
or one that asyncio reports through the loop) in ``errors`` and prints its traceback, while
disconnects stay quiet; a response written to a client that reset the connection is reported
as a disconnect. The forwarding proxy serves a request pipelined behind one it is still
relaying, and drops the origin's connection when the client resets its own mid-exchange.
Order comes from events and from the peers' own bytes, never from sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import select
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest
import trustme

from httpx_extensions.testing import AuthProxy, write_user_file
from httpx_extensions.testing._loopback import H11Stream, ThreadedLoopbackBase

from .test_proxy_server import ALICE, USERS, basic


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while data := sock.recv(65536):
        received += data
    return received


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a client that gives up does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- a server's own bugs ----------------------------------------------------------------------


class _BuggyServer(ThreadedLoopbackBase):
    """Fails in the ways a server written on the machinery can: its handler raises, a
    callback it scheduled raises, asyncio reports a problem without an exception, and a
    callback hits a disconnect (the one thing that must stay quiet)."""

    _thread_name = "buggy-server"

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seq: int
    ) -> None:
        loop = asyncio.get_running_loop()

        def callback_bug() -> None:
            raise KeyError("a callback's bug")

        def callback_disconnect() -> None:
            raise ConnectionResetError("the peer went away")

        loop.call_soon(callback_bug)
        loop.call_soon(callback_disconnect)
        loop.call_exception_handler({"message": "asyncio saw something odd"})
        await asyncio.sleep(0)  # the callbacks run before this task goes on
        raise ValueError("the handler's bug")


def test_cov5_loopback_server_bugs_are_recorded_and_printed_disconnects_are_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _BuggyServer(host="127.0.0.1", ssl_context=None) as server:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            # The server closes once its handler has failed (and the failure is recorded).
            assert _read_until_closed(sock) == b""
        errors = server.errors
    assert [type(exc) for exc in errors] == [RuntimeError, KeyError, ValueError]
    assert str(errors[0]) == "asyncio saw something odd"  # a report without an exception
    assert errors[1].args == ("a callback's bug",)
    assert errors[2].args == ("the handler's bug",)
    printed = capsys.readouterr().err
    assert printed.count("buggy-server: unexpected error") == 3
    assert "ValueError: the handler's bug" in printed  # with its traceback
    assert "Traceback (most recent call last)" in printed
    assert "the peer went away" not in printed


# -- connections open as the server stops ------------------------------------------------


class _Greets(ThreadedLoopbackBase):
    """Writes a greeting to each connection it handles and counts them."""

    _thread_name = "greets"

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(host="127.0.0.1", ssl_context=ssl_context)
        self.handled = 0

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seq: int
    ) -> None:
        self.handled += 1
        writer.write(b"hello")
        await writer.drain()
        await reader.read()  # until the client closes


@contextlib.contextmanager
def _unraisable() -> Iterator[list[str]]:
    """What the interpreter could not raise meanwhile, such as the ResourceWarning that an
    unclosed transport's __del__ emits (the suite turns warnings into errors)."""
    found: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda info: found.append(f"{info.exc_type.__name__}: {info.exc_value}")
    try:
        yield found
    finally:
        sys.unraisablehook = previous


def test_cov5_loopback_connection_accepted_as_the_stop_arrives_is_closed_and_released() -> None:
    # The server's loop sees a new connection and the stop in the same round (a loaded
    # machine's usual way to end a test): the connection is closed and its socket released
    # when stop() returns, not left for the GC to find in a later test. The test holds the
    # loop while the connection arrives and the stop is queued, so both land in one round.
    server = _Greets().start()
    assert server._loop is not None
    assert server._stop_event is not None
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait()

    with _unraisable() as found:
        server._loop.call_soon_threadsafe(hold)
        held.wait()
        sock = socket.create_connection((server.host, server.port), timeout=10)
        server._loop.call_soon_threadsafe(server._stop_event.set)
        release.set()
        server.stop()
        gc.collect()
    with sock, contextlib.suppress(ConnectionResetError):
        assert _read_until_closed(sock) == b""  # closed by the server, not by the GC
    assert found == []
    assert (server.handled, server.connections_opened) == (0, 0)


def test_cov5_loopback_tls_connection_mid_handshake_is_closed_and_released_at_stop(
    ca: trustme.CA, client_ssl_context: ssl.SSLContext
) -> None:
    # A client that connects to an https server and never starts its TLS handshake: stop()
    # still closes that connection and releases its socket.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = _Greets(ssl_context=context).start()
    with _unraisable() as found:
        silent = socket.create_connection((server.host, server.port), timeout=10)
        # The server accepts in arrival order: once a later client has been greeted over
        # TLS, the silent one has been accepted and waits in its handshake.
        with client_ssl_context.wrap_socket(
            socket.create_connection((server.host, server.port), timeout=10),
            server_hostname="127.0.0.1",
        ) as later:
            assert later.recv(5) == b"hello"
        server.stop()
        gc.collect()
    with silent, contextlib.suppress(ConnectionResetError):
        assert _read_until_closed(silent) == b""
    assert found == []
    assert (server.handled, server.connections_opened) == (1, 1)


# -- a response to a client that reset the connection ----------------------------------------


class _AnswersLate(ThreadedLoopbackBase):
    """Reads a request, waits until the client has reset the connection, then answers: what
    a slow handler meets when its client gives up. What ``send()`` raised is kept."""

    _thread_name = "answers-late"

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", ssl_context=None)
        self.send_error: BaseException | None = None
        self.answered = threading.Event()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seq: int
    ) -> None:
        stream = H11Stream(reader, writer, h11.Connection(h11.SERVER))
        assert isinstance(await stream.next_event(), h11.Request)
        assert isinstance(await stream.next_event(), h11.EndOfMessage)
        try:
            with pytest.raises(ConnectionResetError):
                await reader.read(65536)  # the reset arrives
            await stream.send(
                h11.Response(status_code=200, headers=[(b"Content-Length", b"0")]),
                h11.EndOfMessage(),
            )
        except ConnectionResetError as exc:
            self.send_error = exc
            raise
        finally:
            self.answered.set()


def test_cov5_loopback_response_to_a_client_that_reset_is_a_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with _AnswersLate() as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        _reset(sock)
        assert server.answered.wait(10)
        assert server.errors == []  # a disconnect, not a server bug
    assert isinstance(server.send_error, ConnectionResetError)
    assert str(server.send_error) == "connection already closed"
    assert not [r for r in caplog.records if r.name == "asyncio"]  # nothing written to it


# -- the forwarding proxy, a client that pipelines or resets ----------------------------------


class _GatedOrigin:
    """An origin on 127.0.0.1 that holds its first answer until the test releases it.

    It serves requests in order on each connection; every answer's body is the request's
    path. ``first_arrived`` is set once the first request's head is in; while it holds that
    answer it watches the connection too, and ``disconnected`` is set when the proxy closes
    or resets a connection.
    """

    def __init__(self) -> None:
        self.first_arrived = threading.Event()
        self.disconnected = threading.Event()
        self._release_r, self._release_w = socket.socketpair()
        self.paths: list[str] = []
        self._socks: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # the listener was closed: stop()
                return
            self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        with sock:
            try:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = sock.recv(65536)
                        if not data:
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    path = head.split(b" ")[1].decode()
                    self.paths.append(path)
                    if len(self.paths) == 1:
                        self.first_arrived.set()
                        readable, _, _ = select.select([sock, self._release_r], [], [], 10)
                        if sock in readable and not sock.recv(1, socket.MSG_PEEK):
                            return  # the proxy hung up while the answer was held
                    body = path.encode()
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
            except OSError:
                return
            finally:
                self.disconnected.set()

    def release_first(self) -> None:
        self._release_w.send(b"x")

    def stop(self) -> None:
        self.release_first()
        # shutdown() wakes the threads blocked in accept() and recv(); close() would not.
        for sock in [self._listener, *self._socks]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(10)
        self._release_r.close()
        self._release_w.close()


@pytest.fixture
def gated_origin() -> Iterator[_GatedOrigin]:
    origin = _GatedOrigin()
    yield origin
    origin.stop()


@pytest.fixture
def basic_proxy(tmp_path: Path) -> Iterator[AuthProxy]:
    with AuthProxy(
        user_file=write_user_file(tmp_path / "users.txt", USERS), schemes=("Basic",)
    ) as p:
        yield p
    assert p.errors == []


def _forward(origin: _GatedOrigin, path: str) -> bytes:
    (name, value) = basic(*ALICE)[0]
    host = origin.url.split("/")[2]
    return f"GET {origin.url}{path} HTTP/1.1\r\nHost: {host}\r\n{name}: {value}\r\n\r\n".encode()


def test_cov5_proxy_serves_a_request_pipelined_behind_one_it_relays(
    basic_proxy: AuthProxy, gated_origin: _GatedOrigin
) -> None:
    with socket.create_connection((basic_proxy.host, basic_proxy.port), timeout=10) as sock:
        sock.sendall(_forward(gated_origin, "/first"))
        assert gated_origin.first_arrived.wait(10)
        # The proxy is relaying /first (the origin holds its answer) when /second arrives:
        # it reads it while watching the client, and must keep it for after /first.
        sock.sendall(_forward(gated_origin, "/second"))
        gated_origin.release_first()
        client = h11.Connection(h11.CLIENT)
        bodies = []
        for path in ("/first", "/second"):
            client.send(h11.Request(method="GET", target=path, headers=[("Host", "x")]))
            client.send(h11.EndOfMessage())
            body = b""
            while not isinstance(event := client.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    client.receive_data(sock.recv(65536))
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                else:
                    assert isinstance(event, h11.Response)
                    assert event.status_code == 200
            bodies.append(body)
            client.start_next_cycle()
    assert bodies == [b"/first", b"/second"]
    assert gated_origin.paths == ["/first", "/second"]
    assert basic_proxy.requests_forwarded == 2


def test_cov5_proxy_client_reset_mid_exchange_drops_the_origins_connection(
    basic_proxy: AuthProxy, gated_origin: _GatedOrigin
) -> None:
    sock = socket.create_connection((basic_proxy.host, basic_proxy.port), timeout=10)
    sock.sendall(_forward(gated_origin, "/first"))
    assert gated_origin.first_arrived.wait(10)
    _reset(sock)  # the client gives up while the origin still holds the answer
    assert gated_origin.disconnected.wait(10)  # the proxy hung up on the origin too
    assert gated_origin.paths == ["/first"]
