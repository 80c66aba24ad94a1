"""The loopback server machinery under :class:`~httpx_extensions.testing.IISLikeServer`.

A server runs its own asyncio event loop in a daemon thread, so a client under test can run
under asyncio *or* trio (its loop shares nothing with the server's) and the synchronous API
(``start``/``stop``/counters) works from plain test fixtures. HTTP parsing is h11's, so
framing (Content-Length, chunked, HEAD, ``Connection: close``) follows the RFC.

Private: the public face is :mod:`httpx_extensions.testing`. The project's own test servers
(``tests/servers/``) build on these classes too.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

import h11

__all__ = [
    "DISCONNECT_ERRORS",
    "Exchange",
    "H11Stream",
    "IdleTimeout",
    "KeepAliveServer",
    "READ_SIZE",
    "ThreadedLoopbackBase",
    "close_writer",
    "decode_header_value",
    "reason_phrase",
]

READ_SIZE = 65536

# Errors that mean "the peer went away or spoke garbage": never worth a traceback in
# a test run, the connection is simply closed.  (ssl.SSLError is an OSError.)
DISCONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    h11.RemoteProtocolError,
    asyncio.IncompleteReadError,
)

# How a connection may end before it is served: the server stopping, or the client failing or
# dropping the TLS handshake.
_HANDSHAKE_ENDS: tuple[type[BaseException], ...] = (asyncio.CancelledError, *DISCONNECT_ERRORS)

_ServerT = TypeVar("_ServerT", bound="ThreadedLoopbackBase")


class IdleTimeout(Exception):
    """Raised when a keep-alive connection stayed idle longer than ``idle_timeout``."""


def reason_phrase(status: int) -> bytes:
    """Standard reason phrase, so raw-socket tests read a familiar status line."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def decode_header_value(value: bytes) -> str:
    """Decode a header value for display: UTF-8 if it is valid UTF-8, else latin-1.

    Clients send non-ASCII user names either as UTF-8 bytes (what most auth libraries
    do) or as latin-1 (what ``str`` headers turn into in some stacks); both round-trip
    to the intended text this way, and the decoding never fails.
    """
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


async def close_writer(writer: asyncio.StreamWriter, *, abort: bool = False) -> None:
    """Close a transport and wait until asyncio has released the socket.

    Waiting matters: a transport whose socket is still attached when the loop closes
    emits a ResourceWarning, and the test suite turns warnings into errors.  ``abort``
    skips the graceful (possibly TLS) shutdown, which could otherwise wait on a peer
    that no longer reads.
    """
    transport = writer.transport
    if abort:
        transport.abort()
    else:
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2.0)
    except (Exception, asyncio.CancelledError):
        # Closing is best effort and the task is ending anyway: a cancellation here
        # (server stopping) or a timeout must still leave the socket released.
        transport.abort()


class H11Stream:
    """One h11 state machine bound to an asyncio stream pair.

    Shared by the server side of both servers and by the proxy's upstream
    connections (h11 client side).
    """

    __slots__ = ("conn", "reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: h11.Connection
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn

    async def next_event(self, idle_timeout: float | None = None) -> Any:
        """Next h11 event, reading from the socket as needed.

        ``idle_timeout`` bounds only the wait for the *first* byte of a new message
        (an idle keep-alive connection); once a message has started arriving the
        server waits for the rest, as real servers' keep-alive timeouts do.
        """
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if idle_timeout is not None and not self.conn.trailing_data[0]:
                try:
                    data = await asyncio.wait_for(self.reader.read(READ_SIZE), idle_timeout)
                except asyncio.TimeoutError:
                    raise IdleTimeout from None
            else:
                data = await self.reader.read(READ_SIZE)
            idle_timeout = None
            self.conn.receive_data(data)

    async def read_body(self) -> bytes:
        """Collect the body of the message whose headers were just received."""
        chunks: list[bytes] = []
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            # h11 raises RemoteProtocolError for an end of input before EndOfMessage; it yields
            # ConnectionClosed only where a message may end, never after a head: a guard.
            elif isinstance(event, h11.ConnectionClosed):  # pragma: no cover - see above
                raise ConnectionResetError("peer closed the connection mid-message")

    async def send(self, *events: Any, before_write: Callable[[], None] | None = None) -> None:
        """Serialize events and write them in one go (one syscall per response).

        ``before_write`` runs just before the bytes reach the socket, so anything it
        records is visible to a test as soon as the client has the response.
        """
        data = b"".join(self.conn.send(event) or b"" for event in events)
        if self.writer.is_closing():
            # Writing to a lost transport only logs warnings; report it as a disconnect.
            raise ConnectionResetError("connection already closed")
        if before_write is not None:
            before_write()
        self.writer.write(data)
        await self.writer.drain()


class ThreadedLoopbackBase(abc.ABC):
    """Lifecycle shared by the test servers: an asyncio server in a daemon thread.

    Subclasses implement :meth:`_handle` for one accepted connection.  ``stop()``
    closes the listener, cancels every connection handler and waits until all
    sockets are released, so that nothing leaks into the next test.
    """

    _thread_name = "loopback-server"

    def __init__(self, *, host: str, ssl_context: ssl.SSLContext | None) -> None:
        self._host = host
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._started = False
        self._stopping = False
        self._port = 0
        self._tasks: dict[asyncio.Task[None], socket.socket] = {}
        self._seq = itertools.count(1)
        self._connections_opened = 0
        self._open_connections = 0
        self._max_open_connections = 0
        self._errors: list[BaseException] = []

    # -- lifecycle -----------------------------------------------------------------

    def start(self: _ServerT) -> _ServerT:
        """Start the server thread and block until the socket is listening.

        Returns:
            The server itself, so that ``srv = Server(...).start()`` reads naturally.

        Raises:
            RuntimeError: The server was started before (a server starts once), or the
                listener could not be opened (the cause is chained).
        """
        if self._started:
            raise RuntimeError("a loopback server can only be started once")
        self._started = True
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("loopback server failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, then join the thread.

        Idempotent: stopping a server that is not running does nothing.
        """
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        # Both are set before start() returns, which sets _thread after a good start.
        if loop is not None and stop_event is not None:  # pragma: no branch - see above
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=15)
        if thread.is_alive():  # pragma: no cover - would be a bug in the server
            raise RuntimeError(f"{self._thread_name} thread did not stop")
        self._thread = None

    def __enter__(self: _ServerT) -> _ServerT:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The ephemeral port the server listens on (valid after ``start()``)."""
        return self._port

    @property
    def host(self) -> str:
        """The address the server listens on, as given (``127.0.0.1`` by default)."""
        return self._host

    @property
    def scheme(self) -> str:
        """``"https"`` when the server was given an ``ssl_context``, else ``"http"``."""
        return "https" if self._ssl_context is not None else "http"

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{self.scheme}://{host}:{self._port}"

    # -- counters ------------------------------------------------------------------

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since start (or the last ``reset()``)."""
        with self._lock:
            return self._connections_opened

    @property
    def open_connections(self) -> int:
        """TCP connections open right now."""
        with self._lock:
            return self._open_connections

    @property
    def max_open_connections(self) -> int:
        """Peak number of simultaneously open connections."""
        with self._lock:
            return self._max_open_connections

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions inside the server (bugs, not client disconnects)."""
        with self._lock:
            return list(self._errors)

    def _reset_connection_counters(self) -> None:
        # Caller holds the lock.  open_connections is a live gauge, not a counter:
        # zeroing it would make it go negative when those connections close.
        self._connections_opened = 0
        self._max_open_connections = self._open_connections
        self._errors.clear()

    # -- event loop thread ---------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(self._on_loop_error)
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            if not self._ready.is_set():
                self._startup_error = exc
            else:  # pragma: no cover - would be a bug in the server
                self._report(exc)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server((self._host, 0), family=family, backlog=1024)
        try:
            listener.setblocking(False)
            self._port = listener.getsockname()[1]
            loop.add_reader(listener.fileno(), self._accept, listener)
            self._ready.set()
            await self._stop_event.wait()
        finally:
            self._stopping = True
            # No accept can happen after this line: the listener's callback is unregistered
            # (a call already queued for this loop round is dropped with it).
            loop.remove_reader(listener.fileno())
            listener.close()
            # Every accepted socket is listed with its task from the moment it was accepted
            # (_accept), so this finds them all, started or not. A task cancelled before its
            # first step never runs and leaves its socket to us; one that started closes its
            # own transport (close_writer, or connect_accepted_socket's cleanup mid-TLS-
            # handshake), and the loop runs the callbacks that release the socket before
            # gather() returns, as it runs callbacks in the order they were queued.
            accepted = dict(self._tasks)
            for task in accepted:
                task.cancel()
            await asyncio.gather(*accepted, return_exceptions=True)
            for sock in accepted.values():
                sock.close()  # a no-op for a socket its transport closed

    def _accept(self, listener: socket.socket) -> None:
        # A plain callback, not a task: each socket is listed with the task that owns it
        # before anything else runs, so stopping never misses one. (asyncio.start_server
        # leaves a gap there: on Python 3.11, Server.close() between an accept and the task
        # that builds its transport leaves that transport half-built and never closed, a
        # ResourceWarning when the GC finds it: CPython issue gh-109564.)
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                # Nothing left to accept (BlockingIOError), or a connection the peer reset
                # before it was accepted: the loop calls again while one is pending.
                return
            sock.setblocking(False)
            self._tasks[loop.create_task(self._on_connect(sock))] = sock

    async def _on_connect(self, sock: socket.socket) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            # The TLS handshake, for an https server; cancelled mid-way (the server
            # stopping), it closes the transport it made itself.
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self._ssl_context
            )
        except _HANDSHAKE_ENDS:
            self._tasks.pop(task, None)
            return  # a failed handshake is the client's doing: silent by design
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        seq = next(self._seq)
        with self._lock:
            self._connections_opened += 1
            self._open_connections += 1
            self._max_open_connections = max(self._max_open_connections, self._open_connections)
        self._connection_opened(seq)
        try:
            await self._handle(reader, writer, seq)
        except asyncio.CancelledError:
            pass  # server stopping
        except IdleTimeout:
            pass
        except DISCONNECT_ERRORS:
            pass  # client went away: silent by design
        except Exception as exc:
            self._report(exc)
        finally:
            await close_writer(writer, abort=self._stopping)
            self._tasks.pop(task, None)
            with self._lock:
                self._open_connections -= 1

    def _connection_opened(self, seq: int) -> None:  # noqa: B027 - optional hook
        """Hook for subclasses that track per-connection state."""

    @abc.abstractmethod
    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seq: int
    ) -> None:
        """Serve one accepted connection (each server defines it)."""

    def _report(self, exc: BaseException) -> None:
        """Record and print a genuine server bug; disconnects never get here."""
        with self._lock:
            self._errors.append(exc)
        print(f"{self._thread_name}: unexpected error", file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio reports failed TLS handshakes and resets through here; those are
        # client behaviour, not server bugs, so stay quiet about them.
        exc = context.get("exception")
        if isinstance(exc, DISCONNECT_ERRORS):
            return
        if exc is None:
            exc = RuntimeError(str(context.get("message")))
        self._report(exc)


_RecordT = TypeVar("_RecordT")
_StateT = TypeVar("_StateT")


class KeepAliveServer(ThreadedLoopbackBase, Generic[_RecordT, _StateT]):
    """An HTTP/1.1 keep-alive server: h11's request loop, a request log, and the user each
    connection is authenticated as (auth that belongs to the TCP connection).

    Subclasses name the per-connection state (``_state_type``, made when a connection is
    accepted) and the :class:`Exchange` subclass that answers one request
    (``_exchange_type``); exchanges log with :meth:`_record` and :meth:`_set_user`.
    """

    _state_type: ClassVar[type[Any]]
    _exchange_type: ClassVar[type[Exchange[Any, Any]]]

    def __init__(
        self,
        *,
        host: str,
        ssl_context: ssl.SSLContext | None,
        idle_timeout: float | None,
        auth_per_request: bool,
    ) -> None:
        super().__init__(host=host, ssl_context=ssl_context)
        self.idle_timeout = idle_timeout
        self.auth_per_request = auth_per_request
        self._requests_total = 0
        self._log: list[_RecordT] = []
        self._users: dict[int, str | None] = {}
        self._open_seqs: set[int] = set()

    # -- counters --------------------------------------------------------------------------

    @property
    def requests_total(self) -> int:
        """HTTP exchanges whose request head arrived: every 401 leg included, and requests
        the server never answered."""
        with self._lock:
            return self._requests_total

    @property
    def log(self) -> list[_RecordT]:
        """A snapshot of the finished exchanges, in completion order."""
        with self._lock:
            return list(self._log)

    def connection_users(self) -> dict[int, str | None]:
        """Which user each connection is authenticated as.

        Returns:
            ``{conn_seq: user}``, with None for a connection that is not authenticated.
            Closed connections stay listed with their last state until :meth:`reset`.
        """
        with self._lock:
            return dict(self._users)

    def reset(self) -> None:
        """Zero the counters and clear the log. Connection serial numbers keep counting."""
        with self._lock:
            self._reset_locked()

    def _reset_locked(self) -> None:
        # Caller holds the lock.
        self._reset_connection_counters()
        self._requests_total = 0
        self._log.clear()
        self._users = {seq: user for seq, user in self._users.items() if seq in self._open_seqs}

    def _connection_opened(self, seq: int) -> None:
        with self._lock:
            self._users[seq] = None
            self._open_seqs.add(seq)

    def _set_user(self, seq: int, user: str | None) -> None:
        with self._lock:
            self._users[seq] = user

    def _record(self, record: _RecordT) -> None:
        with self._lock:
            self._log.append(record)

    # -- connection handling ---------------------------------------------------------------

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seq: int
    ) -> None:
        stream = H11Stream(reader, writer, h11.Connection(h11.SERVER))
        state = self._state_type()
        try:
            while True:
                event = await stream.next_event(idle_timeout=self.idle_timeout)
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed
                started = time.monotonic()
                with self._lock:
                    self._requests_total += 1
                if stream.conn.they_are_waiting_for_100_continue:
                    await stream.send(h11.InformationalResponse(status_code=100, headers=[]))
                body = await stream.read_body()
                exchange = self._exchange_type(self, stream, seq, state, event, body, started)
                if not await exchange.respond():
                    return
                conn = stream.conn
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # Connection: close from either side
                conn.start_next_cycle()
        finally:
            with self._lock:
                self._open_seqs.discard(seq)


_ServerRefT = TypeVar("_ServerRefT")


class Exchange(abc.ABC, Generic[_ServerRefT, _StateT]):
    """One request on a connection, parsed for a server's handler (:meth:`respond`)."""

    def __init__(
        self,
        server: _ServerRefT,
        stream: H11Stream,
        seq: int,
        auth: _StateT,
        request: h11.Request,
        body: bytes,
        started: float,
    ) -> None:
        self.server = server
        self.stream = stream
        self.seq = seq
        self.auth = auth
        self.request = request
        self.body = body
        self.started = started
        self.method = request.method.decode("ascii", "replace")
        self.target = request.target.decode("latin-1")
        split = urlsplit(self.target)
        self.path = split.path
        self.query = parse_qs(split.query, keep_blank_values=True)
        self.authorization = self.header(b"authorization")

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower-case bytes), decoded for display."""
        for key, value in self.request.headers:
            if key == name:
                return decode_header_value(bytes(value))
        return None

    @abc.abstractmethod
    async def respond(self) -> bool:
        """Answer the request; False means "close the connection now"."""
