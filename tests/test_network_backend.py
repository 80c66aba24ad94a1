"""The asyncio network backend (``_network.py``) on its own, against loopback peers.

The client tests reach it through ExClient; these drive the stream directly for what a request
seldom shows: a peer that resets the connection while we read or while an upload is stalled,
a connect that times out, and the shared deadline timer with waits that ended before it fired.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import struct
from collections.abc import AsyncIterator

import httpcore
import pytest
import trustme

from httpx_extensions._network import AsyncioBackend, Deadlines
from httpx_extensions.testing._loopback import close_writer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the backend is asyncio-only (trio keeps httpcore's AnyIO backend)


def _reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout: close() sends a RST instead of a FIN.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Peer:
    """A loopback server whose per-connection behaviour each test sets."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.port = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.accepted.put((reader, writer))


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = Peer()
    server = await asyncio.start_server(p._accept, "127.0.0.1", 0)
    p.port = server.sockets[0].getsockname()[1]
    async with server:
        yield p
        while not p.accepted.empty():
            _, writer = p.accepted.get_nowait()
            await close_writer(writer)  # released before the loop closes, not left to the GC


@pytest.fixture
async def tls_peer(ca: trustme.CA) -> AsyncIterator[Peer]:
    """A Peer that speaks TLS with a certificate for 127.0.0.1 from the suite's CA."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    p = Peer()
    server = await asyncio.start_server(p._accept, "127.0.0.1", 0, ssl=server_context)
    p.port = server.sockets[0].getsockname()[1]
    async with server:
        yield p
        while not p.accepted.empty():
            _, writer = p.accepted.get_nowait()
            await close_writer(writer)  # released before the loop closes, not left to the GC


async def _tls_stream(peer: Peer, context: ssl.SSLContext) -> httpcore.AsyncNetworkStream:
    plain = await AsyncioBackend().connect_tcp("127.0.0.1", peer.port)
    return await plain.start_tls(context, server_hostname="127.0.0.1")


async def test_network_read_after_reset_raises_read_error(peer: Peer) -> None:
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", peer.port)
    _, writer = await peer.accepted.get()
    assert stream.get_extra_info("is_readable") is False
    _reset(writer)
    with pytest.raises(httpcore.ReadError):
        await stream.read(100)
    await stream.aclose()


async def test_network_read_after_reset_returns_what_arrived_first(peer: Peer) -> None:
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", peer.port)
    _, writer = await peer.accepted.get()
    writer.write(b"HTTP/1.1 413 Too Large\r\n\r\n")
    await writer.drain()
    assert await stream.read(100) == b"HTTP/1.1 413 Too Large\r\n\r\n"
    _reset(writer)
    with pytest.raises(httpcore.ReadError):
        await stream.read(100)
    await stream.aclose()


async def test_network_stalled_upload_fails_with_write_error_on_reset(peer: Peer) -> None:
    # No timeout: only the reset ends the wait for the buffer to drain.
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", peer.port)
    reader, writer = await peer.accepted.get()

    async def reset_once_the_upload_starts() -> None:
        await reader.readexactly(1)
        _reset(writer)

    task = asyncio.ensure_future(reset_once_the_upload_starts())
    with pytest.raises(httpcore.WriteError):
        # Far more than the socket buffers hold: the transport pauses writing.
        await stream.write(b"x" * (64 << 20), timeout=None)
    await task
    # Once closed, an empty write is no write at all; a real one is refused.
    await stream.write(b"")
    with pytest.raises(httpcore.WriteError):
        await stream.write(b"more")
    await stream.aclose()


async def test_network_connect_timeout_raises_connect_timeout() -> None:
    # A zero timeout expires before the connection can be made (its transport is set up on a
    # later turn of the loop), whatever the machine's speed. A bare listening socket: nothing
    # accepted is left to close.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(httpcore.ConnectTimeout, match=r"timed out connecting to 127\.0\.0\.1"):
            await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=0)


async def test_network_connect_refuses_socket_options() -> None:
    option = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with pytest.raises(ValueError, match="socket options"):
        await AsyncioBackend().connect_tcp("127.0.0.1", 9, socket_options=[option])


async def test_network_deadlines_skip_ended_waits_and_keep_later_ones() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    now = loop.time()
    ended: asyncio.Future[None] = loop.create_future()
    due: asyncio.Future[None] = loop.create_future()
    soon: asyncio.Future[None] = loop.create_future()
    later: asyncio.Future[None] = loop.create_future()
    deadlines.add(ended, now - 1, TimeoutError)
    deadlines.add(due, now - 1, TimeoutError)
    deadlines.add(soon, now + 3600, TimeoutError)
    deadlines.add(later, now + 7200, TimeoutError)
    ended.set_result(None)  # the wait ended before the timer fired: left as it is
    with pytest.raises(TimeoutError):
        await due
    assert ended.result() is None
    assert not soon.done()
    assert not later.done()
    # The timer moved to the nearest deadline still pending; an earlier one moves it forward.
    earlier: asyncio.Future[None] = loop.create_future()
    deadlines.add(earlier, loop.time() - 1, ConnectionError)
    with pytest.raises(ConnectionError):
        await earlier
    assert not soon.done()
    assert not later.done()
    deadlines.close()


async def test_network_tls_read_after_reset_raises_read_error(
    tls_peer: Peer, client_ssl_context: ssl.SSLContext
) -> None:
    # Under TLS what the kernel still holds after a reset cannot be decrypted and is left.
    stream = await _tls_stream(tls_peer, client_ssl_context)
    _, writer = await tls_peer.accepted.get()
    assert stream.get_extra_info("ssl_object") is not None
    _reset(writer)
    with pytest.raises(httpcore.ReadError):
        await stream.read(100)
    await stream.aclose()


async def test_network_tls_bytes_left_after_a_write_error_are_not_read_as_plaintext(
    tls_peer: Peer, client_ssl_context: ssl.SSLContext
) -> None:
    # After a failed write, plain TCP reads what the kernel still holds (the server's early
    # answer). Under TLS those bytes are records only the TLS layer can decrypt: read raw, they
    # would be handed to the HTTP parser as the response.
    stream = await _tls_stream(tls_peer, client_ssl_context)
    _, writer = await tls_peer.accepted.get()
    protocol = stream._protocol  # type: ignore[attr-defined]
    sock = stream.get_extra_info("socket")
    # The server's answer reaches the kernel; the loop gets no turn to read it.
    writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
    readable, _, _ = select.select([sock], [], [], 5)
    assert readable == [sock]
    before = bytes(protocol.buffer)
    protocol._read_what_is_left()
    assert bytes(protocol.buffer) == before
    # The TLS layer still decrypts the answer.
    assert (await stream.read(100)).startswith(b"HTTP/1.1 401")
    writer.close()
    await stream.aclose()


async def _interleaved_reads(
    streams: list[httpcore.AsyncNetworkStream], writers: list[asyncio.StreamWriter]
) -> None:
    # Every peer sends its own bytes in pieces, all at once, so the loop fills the shared
    # receive buffer for one connection after another: each must still read its own bytes.
    payloads = [bytes([65 + i]) * 150_000 for i in range(len(streams))]

    async def send(writer: asyncio.StreamWriter, payload: bytes) -> None:
        for start in range(0, len(payload), 7_000):
            writer.write(payload[start : start + 7_000])
            await writer.drain()
            await asyncio.sleep(0)  # a turn for the other peers: their pieces interleave
        writer.close()

    async def receive(stream: httpcore.AsyncNetworkStream) -> bytes:
        got = bytearray()
        while chunk := await stream.read(65_536):
            got += chunk
        return bytes(got)

    senders = [asyncio.ensure_future(send(w, p)) for w, p in zip(writers, payloads, strict=True)]
    received = await asyncio.gather(*(receive(s) for s in streams))
    await asyncio.gather(*senders)
    assert received == payloads
    for stream in streams:
        await stream.aclose()


async def test_network_connections_of_a_loop_share_one_receive_buffer(peer: Peer) -> None:
    # An idle connection holds no receive buffer of its own (bench/scale.py's bytes per idle
    # connection): the loop's connections share one, and each still reads only its own bytes.
    streams = [await AsyncioBackend().connect_tcp("127.0.0.1", peer.port) for _ in range(8)]
    writers = [(await peer.accepted.get())[1] for _ in streams]
    for stream, writer in zip(streams, writers, strict=True):
        writer.write(b"x")
        assert await stream.read(10) == b"x"
    buffers = {id(stream._protocol._receive) for stream in streams}  # type: ignore[attr-defined]
    assert len(buffers) == 1
    await _interleaved_reads(streams, writers)


async def test_network_tls_connections_sharing_the_receive_buffer_read_their_own_bytes(
    tls_peer: Peer, client_ssl_context: ssl.SSLContext
) -> None:
    streams = [await _tls_stream(tls_peer, client_ssl_context) for _ in range(6)]
    writers = [(await tls_peer.accepted.get())[1] for _ in streams]
    await _interleaved_reads(streams, writers)
