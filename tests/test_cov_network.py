"""What ``_network.py`` reads from the kernel after a failed write: the rest of the suite's paths.

After a write fails (the server answered early and reset the connection), the protocol reads
what the kernel still holds, as ``connection_lost`` does, up to its high-water mark. These
drive that read directly on a real loopback socket, as tests/test_network_backend.py does.
"""

from __future__ import annotations

import select
import socket
import struct

import pytest

from httpx_extensions import _network as network
from httpx_extensions._network import AsyncioBackend

from .test_network_backend import Peer, peer  # noqa: F401  (the fixture)

pytestmark = pytest.mark.anyio

ANSWER = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the backend is asyncio-only


async def test_cov_network_answer_before_a_reset_is_kept_and_the_reset_is_not_raised() -> None:
    # A plain socket for the server: its close() sends the reset at once (an asyncio
    # transport's abort() would wait for a loop turn, in which the client reads too).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", listener.getsockname()[1])
        server, _ = listener.accept()
        protocol = stream._protocol  # type: ignore[attr-defined]
        sock = stream.get_extra_info("socket")
        server.sendall(ANSWER)  # the loop gets no turn to read it
        readable, _, _ = select.select([sock], [], [], 5)
        assert readable == [sock]
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()  # a reset, behind the answer
        # What connection_lost() does after a failed write: the answer is read, then the
        # reset ends the read quietly (it is the failed write's error that is reported).
        protocol._read_what_is_left()
        assert bytes(protocol.buffer) == ANSWER
        assert await stream.read(1000) == ANSWER  # the caller gets the answer first
        await stream.aclose()


async def test_cov_network_read_after_a_failed_write_stops_at_the_high_water_mark(
    peer: Peer,  # noqa: F811
) -> None:
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", peer.port)
    _, writer = await peer.accepted.get()
    protocol = stream._protocol  # type: ignore[attr-defined]
    sock = stream.get_extra_info("socket")
    # Already a high-water mark's worth buffered and unread (reading is paused).
    protocol.data_received(b"x" * (network._HIGH_WATER + 1))
    assert protocol.reading_paused
    writer.write(ANSWER)
    readable, _, _ = select.select([sock], [], [], 5)
    assert readable == [sock]
    protocol._read_what_is_left()
    assert len(protocol.buffer) == network._HIGH_WATER + 1  # nothing more taken in
    with sock.dup() as dup:
        assert dup.recv(1000) == ANSWER  # still the kernel's
    writer.close()
    await stream.aclose()
