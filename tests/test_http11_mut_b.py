"""More of what the mutation check (``scripts/mutate http11``) found untested in ``_http11.py``.

Each test plays a server on a real loopback socket (the scripted server of
``tests/test_http11.py``) through ``ExClient`` and checks what a user sees: a cookie set by a
head the line-by-line parser reads (bare LF line ends, obsolete folding) reaches the jar and
goes back to the server; transfer codings split over two ``Transfer-Encoding`` lines are
read as one list (and refused, as ``gzip, chunked`` on one line is); a connection whose
upload the server cut short is not kept, even when its early answer does not say close; an
upload from a source that never awaits lets other tasks run; informational heads are read up
to MAX_HEAD_SIZE bytes in all, not one byte more; a 300 answer to CONNECT is no tunnel; a
head that reaches MAX_HEAD_SIZE before its blank line arrives is read on. A request refused
on the traced path and a connection turned into a tunnel are checked on ``HTTP11Connection``
itself (no server would see the difference), as ``tests/test_http11_hardening.py`` does for
the plain path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.lowlevel
import httpcore
import httpx
import pytest

from httpx_extensions import CONN_ID
from httpx_extensions._http11 import MAX_HEAD_SIZE

from . import test_http11
from .conftest import assert_pool_clean
from .test_http11 import _ABANDONED_BODY, CLOSE, HANG, LINGER, ScriptedServer, client, reply
from .test_http11_hardening import HOST, _connection, _refused, _Stream

pytestmark = pytest.mark.anyio


# The scripted server's fixture, shared with tests/test_http11.py.
serve = test_http11.serve


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\nSet-Cookie: session=abc; Path=/\nContent-Length: 2\n\n",
            id="bare-lf",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc;\r\n Path=/\r\nContent-Length: 2\r\n\r\n",
            id="folded",
        ),
    ],
)
async def test_http11_cookie_of_a_head_parsed_line_by_line_reaches_the_jar(
    serve: Callable[..., ScriptedServer], head: bytes
) -> None:
    # The only header besides the framing is the Set-Cookie: nothing else could make the
    # head look as if it set a cookie.
    server = serve([head + b"in"], reply(b"back"))
    async with client() as c:
        response = await c.get(server.url)
        assert response.text == "in"
        assert c.cookies.get("session") == "abc"
        await c.get(server.url)
        assert_pool_clean(c)
    assert server.requests[1].headers[b"cookie"] == b"session=abc"
    assert [r.conn for r in server.requests] == [0, 0]  # the first connection was kept


@pytest.mark.parametrize(
    "codings",
    [
        pytest.param([b"gzip", b"chunked"], id="gzip-then-chunked"),
        pytest.param([b"chunked", b"chunked"], id="chunked-twice"),
    ],
)
async def test_http11_transfer_encoding_over_two_lines_is_one_list(
    serve: Callable[..., ScriptedServer], codings: list[bytes]
) -> None:
    # RFC 9110 5.3: repeated field lines are one comma-separated list, so these are
    # "gzip, chunked" and "chunked, chunked": codings this client does not decode, refused
    # with the error a user can catch as httpx's.
    lines = [b"Transfer-Encoding: " + coding for coding in codings]
    body = b"5\r\nhello\r\n0\r\n\r\n"
    server = serve(reply(body, headers=lines, length=False), reply(b"recovered"))
    message = await _refused(server, r"^Unsupported Transfer-Encoding: only chunked is supported$")
    assert "hello" not in message


@_ABANDONED_BODY
@pytest.mark.parametrize("traced", [False, True], ids=["plain", "traced"])
async def test_http11_upload_cut_short_by_an_early_answer_is_not_kept(
    serve: Callable[..., ScriptedServer], traced: bool
) -> None:
    # The server answers 413 after the head, without Connection: close, and stops reading:
    # the upload fails, the answer is read, and the connection, whose request never went
    # out whole, is closed rather than kept for the next request.
    sent = 0
    total_parts = 16384  # 1 GiB: far more than gets through before the server closes

    async def upload() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(total_parts):
            sent += 1
            yield b"x" * 65536
            await anyio.lowlevel.checkpoint()  # as a file or network source would

    events: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        events.append(name)

    extensions = {"trace": trace} if traced else {}
    too_large = reply(b"too large", status=b"413 Content Too Large")
    server = serve([too_large, LINGER], reply(b"next"), read_body=False)
    async with client(timeout=httpx.Timeout(5.0)) as c:
        response = await c.post(server.url, content=upload(), extensions=extensions)
        assert (response.status_code, response.text) == (413, "too large")
        assert sent < total_parts  # the upload was cut short
        assert c.connections == []  # closed, not pooled
        assert_pool_clean(c)
        again = await c.get(server.url)
        assert again.text == "next"
    assert [r.conn for r in server.requests] == [0, 1]
    assert ("http11.send_request_body.failed" in events) is traced


async def test_http11_traced_request_refused_leaves_the_connection_unusable() -> None:
    # With a trace callback the request takes the traced path; a request refused there (or
    # failing mid-way) leaves the connection as the plain path does: expired, never reused.
    events: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        events.append(name)

    stream = _Stream(reply(b"never"))
    connection = _connection(stream)
    with pytest.raises(httpcore.LocalProtocolError, match=r"^Missing mandatory Host: header$"):
        await connection.send(b"GET", b"/", [], [], {"trace": trace})
    assert events == ["http11.send_request_headers.started", "http11.send_request_headers.failed"]
    assert stream.written == []
    assert connection.has_expired()
    assert not connection.is_idle()
    with pytest.raises(httpcore.ConnectionNotAvailable):
        await connection.send(b"GET", b"/", [HOST], [], {"trace": trace})


async def test_http11_upload_from_a_source_that_never_awaits_lets_other_tasks_run(
    serve: Callable[..., ScriptedServer],
) -> None:
    # A body source that never awaits (parts already in memory): the connection lets the
    # event loop run between parts, so another task keeps going during the upload instead
    # of waiting for its end. (Small parts: no write here has to wait for the socket.)
    ticks = 0
    seen: list[int] = []
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(20):
            seen.append(ticks)
            yield b"x" * 100

    server = serve(reply(b"ok"))
    async with client() as c, anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        response = await c.post(server.url, content=parts())
        done.set()
        assert response.text == "ok"
        assert_pool_clean(c)
    assert server.requests[0].body == b"x" * 2000
    assert len(seen) == 20
    # The ticker ran between parts (at least every other gap: trio may run it before the
    # upload's task in one batch and after it in the next).
    assert seen[-1] - seen[0] >= len(seen) // 2


@pytest.mark.parametrize("status", [b"100 Continue", b"103 Early Hints", b"204 No Content"])
async def test_http11_invalid_transfer_encoding_refused_where_it_frames_nothing(
    serve: Callable[..., ScriptedServer], status: bytes
) -> None:
    # As h11 checks: a 1xx or 204 has no body, but a Transfer-Encoding it carries must still
    # be one this client could read (the Content-Length twin is in test_http11_hardening.py).
    answer = b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: gzip\r\n\r\n" + reply(b"")
    server = serve([answer, HANG], reply(b"recovered"))
    await _refused(server, r"^Unsupported Transfer-Encoding: only chunked is supported$")


def _hints(size: int) -> bytes:
    """A 103 Early Hints head of exactly ``size`` bytes (its blank line included)."""
    start, end = b"HTTP/1.1 103 Early Hints\r\nLink: <", b">; rel=preload\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("extra", [0, 1], ids=["at-the-bound", "one-byte-over"])
async def test_http11_informational_bytes_bounded_at_max_head_size(
    serve: Callable[..., ScriptedServer], extra: int
) -> None:
    # Informational heads of MAX_HEAD_SIZE bytes in all are read; one byte more is refused.
    heads = _hints(60_000) + _hints(MAX_HEAD_SIZE - 60_000 + extra)
    assert len(heads) == MAX_HEAD_SIZE + extra
    server = serve(heads + reply(b"answer"), reply(b"recovered"))
    if extra:
        await _refused(server, r"^Informational \(1xx\) responses larger than 102400 bytes")
        return
    async with client() as c:
        assert (await c.get(server.url)).text == "answer"
        assert_pool_clean(c)


async def test_http11_connect_answered_300_is_not_a_tunnel(
    serve: Callable[..., ScriptedServer],
) -> None:
    # Only a 2xx answer to CONNECT opens a tunnel (RFC 9110 9.3.6); a 300 is an ordinary
    # response: its body is read and the connection stays in HTTP, reusable.
    multiple = reply(b"choose", status=b"300 Multiple Choices")
    server = serve(multiple, reply(b"next"))
    async with client() as c:
        response = await c.request("CONNECT", server.url)
        assert (response.status_code, response.text) == (300, "choose")
        again = await c.get(server.url)
        assert again.text == "next"
        assert again.extensions[CONN_ID] == response.extensions[CONN_ID]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 0]


async def test_http11_head_of_exactly_max_head_size_read_across_a_pause(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The head's first MAX_HEAD_SIZE bytes come, then (after a pause) its blank line: a head
    # at the bound is read on, not refused for having reached it.
    first = b"HTTP/1.1 200 OK\r\nX-Big: "
    first += b"a" * (MAX_HEAD_SIZE - len(first))
    server = serve([first, 0.2, b"\r\n\r\nhi", CLOSE], reply(b"recovered"))
    async with client() as c:
        response = await c.get(server.url)
        assert (response.status_code, response.text) == (200, "hi")
        assert len(response.headers["x-big"]) == MAX_HEAD_SIZE - 24
        assert_pool_clean(c)


async def test_http11_connect_tunnel_leaves_the_connection_unusable() -> None:
    stream = _Stream(b"HTTP/1.1 200 Connection established\r\n\r\n")
    connection = _connection(stream)
    head = await connection.send(b"CONNECT", b"example.com:443", [HOST], [], {})
    assert head.status == 200
    # Out of HTTP now: expired for the pool, never given another request.
    assert connection.has_expired()
    assert not connection.is_idle()
    with pytest.raises(httpcore.ConnectionNotAvailable):
        await connection.send(b"GET", b"/", [HOST], [], {})
