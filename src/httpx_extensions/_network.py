"""An asyncio-native network backend for httpcore's HTTP/1.1 connections.

httpcore's AnyIO backend enters an anyio cancel scope for every socket read and write (that is
how it applies timeouts). Profiled at 100 concurrent requests, those scopes were the largest
single cost below httpx. On asyncio this backend reads and writes through an
``asyncio.Protocol`` and applies timeouts with one timer per connection that is moved only when
a wait needs an earlier one (a request on a busy connection schedules none). Under trio (or
any other loop) the transport keeps using httpcore's AnyIO backend.

It implements httpcore's public ``AsyncNetworkBackend``/``AsyncNetworkStream`` interfaces, so the
connections above it are httpcore's own.

The protocol is an ``asyncio.BufferedProtocol``: the loop receives into a buffer the connection
owns (``recv_into``) instead of allocating a ``bytes`` of its ``max_size`` (256 KiB on the
selector loop) for every read and shrinking it to what came. An allocation that large is above
glibc's initial mmap threshold (128 KiB), so unless something earlier in the process happened to
free a larger block (which raises the threshold), each socket read cost an mmap, an mremap and
an munmap, plus page faults: 1.4x the CPU per request in a process where nothing had (most
processes of the httpx2 flavour, depending on the hash seed; docs/httpx2.md, "Speed").
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterable
from typing import Any

import httpcore

__all__ = ["AsyncioBackend", "Deadlines"]

# Stop reading from the socket while this much is buffered and unread (a large body arriving
# faster than the caller consumes it); resume below the low mark.
_HIGH_WATER = 1 << 20
_LOW_WATER = 1 << 18
# What one socket read receives at most: httpcore's own read size (READ_NUM_BYTES), so a read
# httpcore asks for is one system call.
_RECEIVE_SIZE = 1 << 16
# One receive buffer per thread, shared by every connection of the event loop running there:
# an idle connection then holds no 64 KiB of its own (bench/scale.py's bytes per idle
# connection). Sharing is safe because every loop fills it and calls buffer_updated() in one
# callback, with no other protocol's get_buffer() between (the selector loop, uvloop, the
# TLS protocol, and the proactor loop, which reads into a buffer of its own and copies), and
# buffer_updated() copies what arrived out before it returns.
_receive_buffers = threading.local()


class Deadlines:
    """Fails futures still pending at their deadline, with one timer for all of them.

    A timer per wait (``call_at`` when it starts, ``cancel`` when it ends) costs a heap push
    and a cancelled entry every time, mostly for waits that end long before their deadline.
    Here a wait that ends leaves the timer where it is; when the timer fires it fails what is
    due and moves to the nearest deadline still pending, if any. With one timeout in use, a
    connection or a pool then schedules about one timer per timeout period however many
    requests it serves. A deadline earlier than the timer moves the timer forward.
    """

    __slots__ = ("_at", "_entries", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._entries: dict[asyncio.Future[Any], tuple[float, type[Exception]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add(self, future: asyncio.Future[Any], at: float, exc_type: type[Exception]) -> None:
        """Fail ``future`` with ``exc_type()`` if it is still pending at ``at`` (loop time)."""
        self._entries[future] = (at, exc_type)
        timer = self._timer
        if timer is None or at < self._at:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(at, self._fire)
            self._at = at

    def discard(self, future: asyncio.Future[Any]) -> None:
        self._entries.pop(future, None)

    def close(self) -> None:
        """Forget every deadline and the timer (the futures are left as they are)."""
        self._entries.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        nearest: float | None = None
        for future, (at, exc_type) in list(self._entries.items()):
            if future.done():
                continue
            if at <= now:
                future.set_exception(exc_type())
            elif nearest is None or at < nearest:
                nearest = at
        if nearest is not None:
            self._timer = self._loop.call_at(nearest, self._fire)
            self._at = nearest


class _Protocol(asyncio.BufferedProtocol):
    """Buffers what arrives; wakes at most one reader and one writer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # What arrived and is unread: the bytes object data_received got, as long as it is
        # the only one (the common case: one response head and body per read), so that
        # neither buffering nor reading it copies it; a bytearray once more are appended.
        self.buffer: bytes | bytearray = b""
        # Where the loop receives (get_buffer): this thread's shared buffer, from the first read.
        self._receive: memoryview | None = None
        self.eof = False
        self.error: BaseException | None = None
        self.read_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.reading_paused = False
        self.transport: asyncio.Transport | None = None
        self.deadlines = Deadlines(loop)  # read and write timeouts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        receive = self._receive
        if receive is None:
            receive = getattr(_receive_buffers, "buffer", None)
            if receive is None:
                _receive_buffers.buffer = receive = memoryview(bytearray(_RECEIVE_SIZE))
            self._receive = receive
        return receive

    def buffer_updated(self, nbytes: int) -> None:
        assert self._receive is not None  # get_buffer came first
        self.data_received(self._receive[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        if not buffer:
            self.buffer = buffer = data
        elif type(buffer) is bytearray:
            buffer += data
        else:
            self.buffer = buffer = bytearray(buffer) + data
        if len(buffer) > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        waiter = self.read_waiter  # _wake_reader(), inline: once per read
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._read_what_is_left()
        self.eof = True
        self.error = exc
        self._wake_reader()
        self.paused = False
        self._wake(self.drain_waiter)
        self.deadlines.close()

    def _read_what_is_left(self) -> None:
        # A write failed (a reset: the server answered early, e.g. 401 or 413, and closed
        # without reading the body). asyncio closes the socket after this call although the
        # kernel may still hold the server's answer: read it while the socket is open, so
        # the answer is returned rather than the write error. Plain TCP only: under TLS the
        # bytes are records to decrypt. start_tls() does not call connection_made again, so
        # self.transport stays the socket's transport, now feeding asyncio's TLS protocol:
        # that, not an ssl_object (which only the TLS transport has), tells TLS apart.
        transport = self.transport
        if transport is None or transport.get_protocol() is not self:
            return
        sock = transport.get_extra_info("socket")
        if sock is None:
            return  # pragma: no cover - socket transports keep "socket" until closed
        try:
            with sock.dup() as dup:
                dup.setblocking(False)
                while len(self.buffer) < _HIGH_WATER:
                    data = dup.recv(_LOW_WATER)
                    if not data:
                        break
                    self.buffer += data
        except OSError:
            pass

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake(self.drain_waiter)

    def _wake_reader(self) -> None:
        self._wake(self.read_waiter)

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """A TCP (or TLS) stream on an asyncio transport."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _Protocol,
        raw: asyncio.Transport | None = None,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        # Under TLS, the socket transport beneath the SSL one (see aclose).
        self._raw = raw

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            # _wait(timeout, "read_waiter", ReadTimeout), inline: one coroutine fewer per read.
            waiter: asyncio.Future[None] = protocol.loop.create_future()
            protocol.read_waiter = waiter
            if timeout is None:
                try:
                    await waiter
                finally:
                    protocol.read_waiter = None
            else:
                deadlines = protocol.deadlines
                deadlines.add(waiter, protocol.loop.time() + timeout, httpcore.ReadTimeout)
                try:
                    await waiter
                finally:
                    protocol.read_waiter = None
                    deadlines.discard(waiter)
        buffer = protocol.buffer
        if buffer:
            if len(buffer) <= max_bytes:
                protocol.buffer = b""
                chunk = buffer if type(buffer) is bytes else bytes(buffer)
            else:
                chunk = bytes(buffer[:max_bytes])
                if isinstance(buffer, bytearray):
                    del buffer[:max_bytes]
                else:
                    protocol.buffer = buffer[max_bytes:]
            if protocol.reading_paused and len(protocol.buffer) < _LOW_WATER:
                protocol.reading_paused = False
                # data_received paused protocol.transport: the socket transport, even under TLS
                assert protocol.transport is not None
                protocol.transport.resume_reading()
            return chunk
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        transport = self._transport
        if transport.is_closing():
            raise httpcore.WriteError("the connection was closed")
        transport.write(buffer)
        if self._protocol.paused:
            await self._wait(timeout, "drain_waiter", httpcore.WriteTimeout)
            if self._protocol.error is not None:
                raise httpcore.WriteError(str(self._protocol.error))

    async def _wait(self, timeout: float | None, slot: str, exc_type: type[Exception]) -> None:
        protocol = self._protocol
        waiter: asyncio.Future[None] = protocol.loop.create_future()
        setattr(protocol, slot, waiter)
        if timeout is not None:
            protocol.deadlines.add(waiter, protocol.loop.time() + timeout, exc_type)
        try:
            await waiter
        finally:
            setattr(protocol, slot, None)
            if timeout is not None:
                protocol.deadlines.discard(waiter)

    async def aclose(self) -> None:
        transport = self._transport
        if not transport.is_closing():
            transport.close()  # under TLS: queues close_notify on the socket transport
        if self._raw is not None and not self._raw.is_closing():
            # Do not wait for the server's close_notify (up to 30 s): flush ours and close the
            # socket now, or the socket transport outlives the event loop unclosed.
            self._raw.close()
        # close() keeps the socket open until unsent data is written, which never happens once
        # the peer stops reading (a write timeout, an abandoned upload): drop it and close now,
        # as anyio's SocketStream.aclose() (httpcore's default backend) does.
        raw = self._raw or transport
        if transport.get_write_buffer_size() or raw.get_write_buffer_size():
            raw.abort()
        # Give the loop one turn to run connection_lost.
        await asyncio.sleep(0)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = self._protocol.loop
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                ),
                timeout,
            )
        except asyncio.TimeoutError as exc:
            self._transport.abort()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        assert transport is not None
        return AsyncioStream(transport, self._protocol, raw=self._raw or self._transport)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # first: the pool asks it once per reused connection
            return self.is_readable()
        transport = self._transport
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        return None

    def is_readable(self) -> bool:
        """True when the server has sent something (or closed) since the last read.

        Asks the protocol, not the socket: the loop polls every socket on each iteration and
        reports data, EOF and errors to the protocol, so a poll() here would only catch what
        arrived during this iteration, at the price of a system call per check (aiohttp
        does not make it either).
        """
        return bool(self._protocol.buffer or self._protocol.eof or self._transport.is_closing())


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens :class:`AsyncioStream` connections on the running asyncio loop."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if socket_options:
            raise ValueError("set socket options on the returned stream (ExTransport does)")
        loop = asyncio.get_running_loop()
        protocol = _Protocol(loop)
        local = None if local_address is None else (local_address, 0)
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: protocol, host, port, local_addr=local), timeout
            )
        except asyncio.TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - exercised on POSIX only
        loop = asyncio.get_running_loop()
        protocol = _Protocol(loop)
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_unix_connection(lambda: protocol, path), timeout
            )
        except asyncio.TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"timed out connecting to {path}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
