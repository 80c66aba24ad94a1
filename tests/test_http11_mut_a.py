"""Boundaries of ``_http11.py`` that the mutation check (``scripts/mutate http11``) found untested.

Each test plays a server on a real loopback socket (the scripted server of
``tests/test_http11.py``) through ``ExClient`` and checks what a user sees: the largest
Content-Length and chunk size the parser promises to take are taken (one more is refused by
``tests/test_http11_hardening.py``), a cookie set by a response that leaves HTTP still
reaches the client's jar, and a head without ``Set-Cookie`` is not handed to the jar at all.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import httpcore
import pytest

from . import test_http11
from .conftest import assert_pool_clean
from .test_http11 import CLOSE, ECHO, HANG, ScriptedServer, client, reply
from .test_http11_hardening import HOST, _connection, _Stream

pytestmark = pytest.mark.anyio

_LARGEST = 2**63 - 1


# The scripted server's fixture, shared with tests/test_http11.py.
serve = test_http11.serve


async def _first_bytes(server: ScriptedServer) -> tuple[int, bytes]:
    """Stream a GET: its status and the first body bytes; the response is then closed."""
    async with client() as c:
        async with (
            c.stream("GET", server.url) as response,
            contextlib.aclosing(response.aiter_raw()) as body,
        ):
            data = await anext(body)
        # Closed with most of its body unread: the connection is dropped, not pooled.
        assert c.connections == []
        assert_pool_clean(c)
    return response.status_code, data


async def test_http11_content_length_of_2_63_minus_1_accepted(
    serve: Callable[..., ScriptedServer],
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % _LARGEST
    server = serve([head + b"hello", HANG])
    assert await _first_bytes(server) == (200, b"hello")


async def test_http11_chunk_size_of_2_63_minus_1_accepted(
    serve: Callable[..., ScriptedServer],
) -> None:
    size = b"%x" % _LARGEST
    assert size == b"7fffffffffffffff"  # 16 hex digits: the digit bound lets it through
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = serve([head + size + b"\r\nhello", HANG])
    assert await _first_bytes(server) == (200, b"hello")


async def test_http11_cookie_set_by_an_upgrade_response_reaches_the_jar(
    serve: Callable[..., ScriptedServer],
) -> None:
    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n"
        b"Set-Cookie: session=abc; Path=/\r\n\r\n"
    )
    server = serve([switching, ECHO])
    headers = {"Upgrade": "echo", "Connection": "Upgrade"}
    async with client() as c:
        async with c.stream("GET", server.url, headers=headers) as response:
            assert response.status_code == 101
        assert c.cookies.get("session") == "abc"
        assert_pool_clean(c)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\n\r\n", id="no-header"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n", id="no-framing-header"),
    ],
)
async def test_http11_response_without_set_cookie_skips_the_cookie_jar(
    serve: Callable[..., ScriptedServer], monkeypatch: pytest.MonkeyPatch, head: bytes
) -> None:
    # The head says it sets no cookie, so the client skips http.cookiejar's per-response
    # work (the reason the flag exists); a response that does set one goes through it.
    calls: list[object] = []
    extract = http.cookiejar.CookieJar.extract_cookies

    def spy(jar: http.cookiejar.CookieJar, response: Any, request: Any) -> None:
        calls.append(response)
        extract(jar, response, request)

    monkeypatch.setattr(http.cookiejar.CookieJar, "extract_cookies", spy)
    server = serve([head + b"hello", CLOSE], reply(b"", headers=[b"Set-Cookie: a=1"]))
    async with client() as c:
        response = await c.get(server.url)
        assert response.content == b"hello"
        assert calls == []
        await c.get(server.url)
        assert len(calls) == 1
        assert c.cookies.get("a") == "1"


async def test_http11_closed_connection_refuses_requests_and_says_so() -> None:
    stream = _Stream(reply(b"never sent"))
    connection = _connection(stream)
    await connection.aclose()
    # The pool reads these to decide not to close it again or hand it out.
    assert connection.is_closed()
    assert connection.has_expired()
    assert not connection.is_idle()
    with pytest.raises(httpcore.ConnectionNotAvailable):
        await connection.send(b"GET", b"/", [HOST], [], {})
    assert stream.written == []  # nothing went to a closed stream


async def test_http11_upgraded_stream_closed_by_the_user_closes_the_socket(
    serve: Callable[..., ScriptedServer],
) -> None:
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
    server = serve([switching, ECHO])
    headers = {"Upgrade": "echo", "Connection": "Upgrade"}
    async with client() as c:
        async with c.stream("GET", server.url, headers=headers) as response:
            stream = response.extensions["network_stream"]
            await stream.aclose()
            # The server sees the close now, while the response is still open.
            await anyio.to_thread.run_sync(server.wait_finished, 1)
        assert_pool_clean(c)
