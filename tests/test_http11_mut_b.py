"""More of what the mutation check (``scripts/mutate http11``) found untested in ``_http11.py``.

Each test plays a server on a real loopback socket (the scripted server of
``tests/test_http11.py``) through ``ExClient`` and checks what a user sees: a cookie set by a
head the line-by-line parser reads (bare LF line ends, obsolete folding) reaches the jar and
goes back to the server, and transfer codings split over two ``Transfer-Encoding`` lines are
read as one list (and refused, as ``gzip, chunked`` on one line is).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .conftest import assert_pool_clean
from .test_http11 import Answer, ScriptedServer, client, reply
from .test_http11_hardening import _refused

pytestmark = pytest.mark.anyio


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
