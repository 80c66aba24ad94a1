"""A request lost on a reused keep-alive connection is sent once more on a new connection.

A server may close an idle keep-alive connection (its keep-alive timeout) just as the client
sends the next request on it; the request then fails before any byte of an answer arrives
("Server disconnected without sending a response", or a reset). The server cannot have acted
on it, so an idempotent request with a replayable body goes out again, once, on a new
connection, as urllib3 and aiohttp do. The scripted raw-socket server of test_http11 plays
the exact failure on the connection a test chooses.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import anyio
import httpx
import pytest

from httpx_extensions import CONN_ID

from .conftest import assert_pool_clean
from .test_http11 import (
    CLOSE,
    Action,
    Answer,
    ScriptedServer,
    ServerConnection,
    _Act,
    client,
    reply,
)

pytestmark = pytest.mark.anyio

#: Close with a reset (SO_LINGER 0) instead of a FIN: the client's read fails with ECONNRESET.
RESET = _Act("RESET")


class _ResettingServer(ScriptedServer):
    def _play(self, conn: ServerConnection, actions: Sequence[Action]) -> bool:
        if list(actions) == [RESET]:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        return super()._play(conn, actions)


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(*answers: Answer, **kwargs: Any) -> ScriptedServer:
        server = _ResettingServer(*answers, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("lost", [CLOSE, RESET], ids=["closed", "reset"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "DELETE", "TRACE"])
async def test_retry_idempotent_request_lost_on_reused_connection_is_sent_again(
    serve: Callable[..., ScriptedServer], method: str, lost: _Act
) -> None:
    server = serve(reply(b""), [lost], reply(b""))
    async with client() as c:
        first = await c.get(server.url + "/first")
        again = await c.request(method, server.url + "/again")
        assert again.status_code == 200
        assert again.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert [info.conn_id for info in c.connections] == [again.extensions[CONN_ID]]
        assert_pool_clean(c)
    # The lost request went out on the reused connection, then once on a new one.
    assert [(r.conn, r.request_line.split(b" ")[0]) for r in server.requests] == [
        (0, b"GET"),
        (0, method.encode()),
        (1, method.encode()),
    ]


async def test_retry_put_body_in_memory_arrives_whole_on_the_new_connection(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(reply(b"one"), [CLOSE], reply(b"stored"))
    async with client() as c:
        await c.get(server.url)
        response = await c.put(server.url + "/doc", content=b"the document")
        assert response.text == "stored"
    assert [(r.conn, r.body) for r in server.requests[1:]] == [
        (0, b"the document"),
        (1, b"the document"),
    ]


async def test_retry_pinned_request_to_the_lost_connection_is_sent_again_unpinned(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(reply(b"one"), [CLOSE], reply(b"two"))
    async with client() as c:
        first = await c.get(server.url)
        pinned = await c.get(server.url, extensions={CONN_ID: first.extensions[CONN_ID]})
        assert pinned.text == "two"
        assert pinned.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(c)


async def test_retry_post_is_never_sent_twice(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(reply(b"one"), [CLOSE], reply(b"never"))
    async with client() as c:
        await c.get(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await c.post(server.url, content=b"order #1")
        assert_pool_clean(c)
    assert len(server.requests) == 2


async def test_retry_streamed_body_is_not_sent_twice(
    serve: Callable[..., ScriptedServer],
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"part one, "
        yield b"part two"

    server = serve(reply(b"one"), [CLOSE], reply(b"never"))
    async with client() as c:
        await c.get(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await c.put(server.url, content=body())
        assert_pool_clean(c)
    assert len(server.requests) == 2


async def test_retry_not_on_a_new_connection(serve: Callable[..., ScriptedServer]) -> None:
    # A new connection that fails says something about the server, not about keep-alive.
    server = serve([CLOSE], reply(b"never"))
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await c.get(server.url)
        assert_pool_clean(c)
    assert len(server.requests) == 1


async def test_retry_only_once(serve: Callable[..., ScriptedServer]) -> None:
    server = serve(reply(b"one"), [CLOSE], [CLOSE], reply(b"never"))
    async with client() as c:
        await c.get(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await c.get(server.url)
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 0, 1]


async def test_retry_not_after_part_of_an_answer_arrived(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(reply(b"one"), [b"HTTP/1.1 200 OK\r\nContent-Le", 0.02, CLOSE], reply(b"x"))
    async with client() as c:
        await c.get(server.url)
        with pytest.raises(httpx.RemoteProtocolError, match="middle of the response head"):
            await c.get(server.url)
        assert_pool_clean(c)
    assert len(server.requests) == 2


async def test_retry_opens_a_new_connection_rather_than_another_idle_one(
    serve: Callable[..., ScriptedServer],
) -> None:
    # Two idle connections; the one picked (the most recently used) was lost: the request
    # goes out on a new connection, not on the other idle one, which sat just as long.
    server = serve(reply(b"a"), reply(b"b"), [CLOSE], reply(b"c"))
    async with client() as c:
        started = anyio.Event()
        count = 0

        async def get() -> httpx.Response:
            nonlocal count
            async with c.stream("GET", server.url) as response:
                count += 1
                if count == 2:
                    started.set()
                await started.wait()  # both connections in use at once
                await response.aread()
            return response

        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            tg.start_soon(get)
        assert len(c.connections) == 2
        response = await c.get(server.url)
        assert response.text == "c"
        assert_pool_clean(c)
    assert len(server.connections) == 3
    assert server.requests[3].conn == 2  # the resent request: on a third connection


async def test_retry_logged_at_debug_with_the_conn_id(
    serve: Callable[..., ScriptedServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(reply(b"one"), [CLOSE], reply(b"two"))
    async with client() as c:
        first = await c.get(server.url)
        with caplog.at_level(logging.DEBUG, logger="httpx_extensions.pool"):
            await c.get(server.url)
    (record,) = [r for r in caplog.records if "again on a new connection" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert f"conn_id {first.extensions[CONN_ID]} " in record.getMessage()
    assert "GET" in record.getMessage()
