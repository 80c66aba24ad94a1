"""The HTTP/1.1 parser refuses what RFC 9112/9110 forbid, bounds what it reads, keeps secrets out.

Each test plays hostile server bytes on a real loopback socket (the scripted server of
``tests/test_http11.py``) through ``ExClient``, and checks what a user sees: an
``httpx.RemoteProtocolError`` that names the problem (and never shows a header value), a
pool left clean, a connection that is not reused after a doubtful response. The endless
senders count the bytes they got out, so the bounds are shown in bytes, not in time.

The request-side refusals and the connection's keep-alive clock are checked on
``HTTP11Connection`` itself over an in-memory stream, where no server could see them anyway.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpcore
import httpx
import pytest

from httpx_extensions import CONN_ID
from httpx_extensions import _http11 as http11
from httpx_extensions._http11 import MAX_HEAD_SIZE, MAX_INFORMATIONAL, HTTP11Connection

from . import test_http11
from .conftest import assert_pool_clean
from .test_http11 import (
    CLOSE,
    HANG,
    READ,
    Action,
    ScriptedServer,
    Until,
    client,
    reply,
    split,
)

pytestmark = pytest.mark.anyio

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


# The scripted server's fixture, shared with tests/test_http11.py.
serve = test_http11.serve


async def _refused(server: ScriptedServer, message: str) -> str:
    """GET once: it must fail with ``message``; then the pool is clean and the server works."""
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match=message) as info:
            await c.get(server.url)
        assert c.connections == []  # the broken connection was closed, not pooled
        assert_pool_clean(c)
        again = await c.get(server.url)
        assert again.text == "recovered"
    return str(info.value)


# Content-Length: 1*DIGIT, a list of one repeated value, at most 2**63-1.


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(b"5,", r"empty value or empty list element", id="trailing-comma"),
        pytest.param(b",5", r"empty value or empty list element", id="leading-comma"),
        pytest.param(b"5,,5", r"empty value or empty list element", id="empty-between"),
        pytest.param(b"+5", r"not a decimal number", id="plus-sign"),
        pytest.param(b"5 6", r"not a decimal number", id="two-numbers"),
        pytest.param(b"0x5", r"not a decimal number", id="hex"),
        pytest.param(b"5, 6", r"^Conflicting Content-Length values$", id="list-conflict"),
        pytest.param(b"9" * 5000, r"not a decimal number of at most 20 digits", id="5000-digits"),
        pytest.param(b"0" * 20 + b"5", r"at most 20 digits", id="21-digits"),
        pytest.param(b"%d" % 2**63, r"above 2\*\*63-1", id="2**63"),
    ],
)
async def test_http11_invalid_content_length_refused(
    serve: Callable[..., ScriptedServer], value: bytes, message: str
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\nhello"
    server = serve([answer, HANG], reply(b"recovered"))
    shown = await _refused(server, message)
    assert value not in shown.encode()  # the value is never echoed


async def test_http11_content_length_refused_on_a_streamed_response(
    serve: Callable[..., ScriptedServer],
) -> None:
    # client.stream() reads the head the same way: a 5,000-digit length is an httpx error.
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\nhello"
    server = serve([answer, HANG])
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match=r"at most 20 digits"):
            async with c.stream("GET", server.url):
                pass  # pragma: no cover - the head is refused before the body
        assert_pool_clean(c)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([b"Content-Length: 5, 5"], id="list-of-one-value"),
        pytest.param([b"Content-Length: 5", b"Content-Length: 5"], id="repeated-header"),
        pytest.param([b"Content-Length: 00000000000000000005"], id="20-digits"),
    ],
)
async def test_http11_repeated_identical_content_length_accepted(
    serve: Callable[..., ScriptedServer], headers: list[bytes]
) -> None:
    server = serve(reply(b"hello", headers=headers, length=False), reply(b"next"))
    async with client() as c:
        first = await c.get(server.url)
        assert first.content == b"hello"
        second = await c.get(server.url)
        assert second.text == "next"
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]  # framing was sound


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified", b"100 Continue"])
async def test_http11_invalid_content_length_refused_where_it_frames_nothing(
    serve: Callable[..., ScriptedServer], status: bytes
) -> None:
    # A 204/304/1xx has no body, but a malformed framing header is still a protocol error.
    answer = b"HTTP/1.1 " + status + b"\r\nContent-Length: 5,\r\n\r\n" + reply(b"")
    server = serve([answer, HANG], reply(b"recovered"))
    await _refused(server, r"Content-Length")


async def test_http11_transfer_encoding_and_content_length_chunked_not_reused(
    serve: Callable[..., ScriptedServer],
) -> None:
    # RFC 9112 6.3: chunked wins, and such a response may be smuggling: no reuse.
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = serve(answer + b"5\r\nhello\r\n0\r\n\r\n", reply(b"next"))
    async with client() as c:
        first = await c.get(server.url)
        assert first.content == b"hello"
        second = await c.get(server.url)
        assert second.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 1]


async def test_http11_higher_minor_version_kept_alive_as_1_1(
    serve: Callable[..., ScriptedServer],
) -> None:
    # RFC 9110 2.5: HTTP/1.2 is read as HTTP/1.1 (found by the differential fuzz: h11 does
    # so, and we closed the connection as for HTTP/1.0).
    server = serve(reply(b"one", version=b"HTTP/1.2"), reply(b"two"))
    async with client() as c:
        first = await c.get(server.url)
        assert first.http_version == "HTTP/1.2"
        second = await c.get(server.url)
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]
    assert [r.conn for r in server.requests] == [0, 0]


@pytest.mark.parametrize(
    "value",
    [b"chunked,", b", chunked", b"Chunked"],
)
async def test_http11_transfer_encoding_empty_list_elements_accepted(
    serve: Callable[..., ScriptedServer], value: bytes
) -> None:
    # RFC 9110 5.6.1: a recipient MUST accept empty list elements (h11 does not).
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + value + b"\r\n\r\n"
    server = serve(answer + b"2\r\nok\r\n0\r\n\r\n")
    async with client() as c:
        assert (await c.get(server.url)).content == b"ok"


# Chunked framing: CRLF, no bare CR, bounded sizes, extensions by the grammar.


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            b"5\nhello\r\n0\r\n\r\n", r"not ended by CRLF \(a bare LF\)", id="size-bare-lf"
        ),
        pytest.param(b"5\r\nhello\n0\r\n\r\n", r"not followed by CRLF", id="data-bare-lf"),
        pytest.param(b"5\r\nhello\r\r\n0\r\n\r\n", r"not followed by CRLF", id="data-cr-cr-lf"),
        pytest.param(b"5\r\r\nhello\r\n0\r\n\r\n", r"Invalid chunk size line", id="size-cr-cr-lf"),
        pytest.param(b"5\r\nhello\r\n0\n\r\n", r"not ended by CRLF", id="last-size-bare-lf"),
        pytest.param(b"5;a\rb\r\nhello\r\n0\r\n\r\n", r"Invalid chunk size line", id="ext-bare-cr"),
        pytest.param(b"5;a=\x01\r\nhello\r\n0\r\n\r\n", r"Invalid chunk size line", id="ext-ctl"),
        pytest.param(b"5;\r\nhello\r\n0\r\n\r\n", r"Invalid chunk size line", id="ext-no-name"),
        pytest.param(b"5; a b\r\nhello\r\n0\r\n\r\n", r"Invalid chunk size line", id="ext-two"),
        pytest.param(
            b'5;a="x\r\nhello\r\n0\r\n\r\n', r"Invalid chunk size line", id="ext-open-quote"
        ),
        pytest.param(
            b"0000000000000000005\r\nhello\r\n0\r\n\r\n", r"more than 16 hex", id="19-hex"
        ),
        pytest.param(b"8000000000000000\r\nhello\r\n0\r\n\r\n", r"above 2\*\*63-1", id="2**63"),
        pytest.param(
            b"f" * 5000 + b"\r\nhello\r\n0\r\n\r\n", r"Chunk size too large", id="5000-hex"
        ),
    ],
)
async def test_http11_invalid_chunk_framing_refused(
    serve: Callable[..., ScriptedServer], body: bytes, message: str
) -> None:
    server = serve([CHUNKED + body, HANG], reply(b"recovered"))
    await _refused(server, message)


@pytest.mark.parametrize(
    "size_line",
    [b"5;a", b"5;a=b", b'5;a="q \\" s"', b"5 ; a = b ;c", b"5  ", b"0005", b"5;a=b\t"],
)
async def test_http11_chunk_extensions_by_the_grammar_accepted(
    serve: Callable[..., ScriptedServer], size_line: bytes
) -> None:
    server = serve(CHUNKED + size_line + b"\r\nhello\r\n0\r\n\r\n", reply(b"next"))
    async with client() as c:
        first = await c.get(server.url)
        assert first.content == b"hello"
        second = await c.get(server.url)
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]


@pytest.mark.parametrize(
    ("head", "message"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-A: b\r\r\nContent-Length: 0\r\n\r\n",
            r"value of 'X-A' has a control character, a bare CR",
            id="header-cr-cr-lf",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\r\nContent-Length: 0\r\n\r\n",
            r"Invalid status line",
            id="status-cr-cr-lf",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-A: b\rX-B: c\r\nContent-Length: 0\r\n\r\n",
            r"value of 'X-A' has a control character, a bare CR",
            id="header-bare-cr-inside",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 0\r\n\r\n",
            r"field name that is not a token",
            id="space-before-colon",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
            r"a line without a colon",
            id="no-colon",
        ),
    ],
)
async def test_http11_bare_cr_and_bad_header_lines_refused(
    serve: Callable[..., ScriptedServer], head: bytes, message: str
) -> None:
    server = serve([head, HANG], reply(b"recovered"))
    await _refused(server, message)


@pytest.mark.parametrize(
    ("trailers", "message"),
    [
        pytest.param(b"X-T: a\x00b\r\n", r"value of 'X-T' has a control character", id="nul"),
        pytest.param(b"\x00\r\n", r"a line without a colon", id="nul-line"),
        pytest.param(b"no colon\r\n", r"a line without a colon", id="no-colon"),
        pytest.param(b"HTTP/1.1 200 OK\r\n", r"a line without a colon", id="status-line"),
        pytest.param(b" folded: first\r\n", r"trailer section starts with a folded", id="fold"),
        pytest.param(b"X-T: a\r\r\n", r"value of 'X-T' has a control character", id="cr-cr-lf"),
    ],
)
async def test_http11_invalid_trailer_lines_refused(
    serve: Callable[..., ScriptedServer], trailers: bytes, message: str
) -> None:
    body = b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n"
    server = serve([CHUNKED + body, HANG], reply(b"recovered"))
    shown = await _refused(server, message)
    assert "trailer section" in shown


async def test_http11_valid_trailers_read_and_dropped(
    serve: Callable[..., ScriptedServer],
) -> None:
    # Bare LF line ends and folding are allowed in trailers, as in the head (RFC 9112 2.2).
    body = b"5\r\nhello\r\n0\r\nX-T: a\r\n  folded\nX-U: b\n\n"
    server = serve(CHUNKED + body, reply(b"next"))
    async with client() as c:
        first = await c.get(server.url)
        assert first.content == b"hello"
        assert "x-t" not in first.headers  # trailers are dropped, not merged
        second = await c.get(server.url)
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]


# Bounds: in bytes, whatever the pace of the server.


class Endless(Sequence[Action]):
    """Server actions: ``first``, then ``piece`` again and again (up to ``cap`` bytes).

    ``sent`` counts the bytes the server got out (each send returned), so a test can show
    that the client stopped reading after a bounded number of bytes.
    """

    def __init__(self, first: bytes, piece: bytes, cap: int = 64 * 1024 * 1024) -> None:
        self.first = first
        self.piece = piece * max(1, 16384 // len(piece))  # fewer, larger sends
        self.cap = cap
        self.sent = 0

    def __iter__(self) -> Iterator[Action]:
        yield self.first
        self.sent = len(self.first)
        while self.sent < self.cap:
            yield self.piece
            self.sent += len(self.piece)
        yield CLOSE

    def __len__(self) -> int:  # pragma: no cover - the server only iterates
        raise TypeError("endless")

    def __getitem__(self, index: Any) -> Any:  # pragma: no cover - the server only iterates
        raise TypeError("endless")


# A socket pair on loopback buffers a few MB between the two ends: what the server got out
# is what the client read plus that; far below the 64 MB the server would send.
_SLACK = 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("first", "piece", "message"),
    [
        pytest.param(
            CHUNKED + b"5\r\nhello\r\n0\r\n",
            b"X-Trailer: endless\r\n",
            rf"^Response trailer section larger than {MAX_HEAD_SIZE} bytes$",
            id="endless-trailers",
        ),
        pytest.param(
            b"",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            rf"^Server sent more than {MAX_INFORMATIONAL} informational \(1xx\) responses",
            id="endless-100-continue",
        ),
        pytest.param(
            b"",
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload"
            + b"x" * 2000
            + b"\r\n\r\n",
            rf"^Informational \(1xx\) responses larger than {MAX_HEAD_SIZE} bytes in total",
            id="endless-large-103",
        ),
        pytest.param(
            CHUNKED,
            b"1;" + b"x" * 1000,
            rf"^Response chunk size line longer than {MAX_HEAD_SIZE} bytes$",
            id="endless-chunk-size-line",
        ),
        pytest.param(
            CHUNKED + b"5\r\nhello\r\n0\r\nX-Trailer: ",
            b"y" * 1000,
            rf"^Response trailer section larger than {MAX_HEAD_SIZE} bytes$",
            id="endless-trailer-line",
        ),
    ],
)
async def test_http11_endless_response_stopped_by_a_byte_limit(
    serve: Callable[..., ScriptedServer], first: bytes, piece: bytes, message: str
) -> None:
    endless = Endless(first, piece)
    server = serve(endless, reply(b"recovered"))
    # No read timeout at all: only the byte limits can stop the read.
    async with client(timeout=httpx.Timeout(None)) as c:
        with pytest.raises(httpx.RemoteProtocolError, match=message):
            await c.get(server.url)
        assert_pool_clean(c)
        assert (await c.get(server.url)).text == "recovered"
    server.wait_finished(2)
    assert endless.sent < _SLACK, endless.sent


async def test_http11_informational_responses_up_to_the_limit_accepted(
    serve: Callable[..., ScriptedServer],
) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" * MAX_INFORMATIONAL + reply(b"answer")
    server = serve(answer)
    async with client() as c:
        response = await c.get(server.url)
        assert (response.status_code, response.text) == (200, "answer")
    # The limit is written out (a test reading MAX_INFORMATIONAL would follow a change): 100.
    one_more = b"HTTP/1.1 100 Continue\r\n\r\n" * 101 + reply(b"answer")
    server = serve([one_more, HANG], reply(b"recovered"))
    await _refused(server, r"more than 100 informational")


async def test_http11_trailer_section_up_to_the_limit_accepted(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The whole trailer section, its lines and their line ends, fits in MAX_HEAD_SIZE.
    line = b"X-T: " + b"t" * 1000 + b"\r\n"
    count, rest = divmod(MAX_HEAD_SIZE - 2, len(line))
    filler = b"X-U: " + b"u" * (rest - 7) + b"\r\n" if rest >= 7 else b""
    trailers = line * count + filler
    assert len(trailers) + 2 <= MAX_HEAD_SIZE
    body = b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n"
    server = serve(CHUNKED + body)
    async with client() as c:
        assert (await c.get(server.url)).content == b"hello"
    too_many = b"5\r\nhello\r\n0\r\n" + trailers + line + b"\r\n"
    server = serve([CHUNKED + too_many, HANG], reply(b"recovered"))
    await _refused(server, r"trailer section larger than")


async def test_http11_head_over_max_head_size_in_one_read_refused(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The whole head, end included, arrives in one send: the check after the end is found.
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Big: " + b"a" * MAX_HEAD_SIZE + b"\r\n\r\n"
    server = serve([head, HANG], reply(b"recovered"))
    await _refused(server, rf"^Response head larger than {MAX_HEAD_SIZE} bytes$")


async def test_http11_extra_bytes_after_a_streamed_body_not_reused(
    serve: Callable[..., ScriptedServer],
) -> None:
    # The body does not arrive with the head: it is read by _fixed as it comes, and the
    # bytes after its end (an unrequested response) arrive with its last part.
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234"
    server = serve(split(head + b"56789" + reply(b"unasked"), len(head)), reply(b"next"))
    async with client() as c:
        async with c.stream("GET", server.url) as first:
            assert b"".join([part async for part in first.aiter_raw()]) == b"0123456789"
        second = await c.get(server.url)
        assert second.text == "next"
        assert second.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 1]


# Secrets stay out of errors and of the DEBUG log.

TOKEN = b"YIIGhgYJKoZIhvcSAQICAQBuggZ1MIIGcaADAgEFoQMCAQ6iBwMFACAAAACjggSSYYIEjj"


@pytest.mark.parametrize(
    "challenge",
    [
        pytest.param(b"WWW-Authenticate: Negotiate " + TOKEN + b"\x00", id="nul"),
        pytest.param(b"WWW-Authenticate: Negotiate " + TOKEN + b"\r\n \x01bad", id="bad-fold"),
        pytest.param(b"WWW-Authenticate: Negotiate " + TOKEN + b"\r\r", id="cr-cr-lf"),
        pytest.param(b"Proxy-Authenticate: NTLM " + TOKEN + b"\x7f", id="proxy-del"),
        pytest.param(b"Set-Cookie: session=" + TOKEN + b"\x00", id="set-cookie"),
    ],
)
@pytest.mark.parametrize("debug", [False, True])
async def test_http11_malformed_challenge_token_not_in_error_or_log(
    serve: Callable[..., ScriptedServer],
    caplog: pytest.LogCaptureFixture,
    challenge: bytes,
    debug: bool,
) -> None:
    answer = b"HTTP/1.1 401 Unauthorized\r\n" + challenge + b"\r\nContent-Length: 0\r\n\r\n"
    server = serve([answer, HANG], reply(b"recovered"))
    level = logging.DEBUG if debug else logging.INFO
    with caplog.at_level(level, logger="httpx_extensions.http11"):
        shown = await _refused(server, r"Invalid header line in the response head")
    assert TOKEN.decode() not in shown
    assert TOKEN[:16].decode() not in shown
    name = challenge.split(b":")[0].decode()
    assert name in shown  # the header is named, so the user knows where to look
    messages = [record.getMessage() for record in caplog.records]
    if debug:  # the failure was logged, with the same message, without the token
        assert any("receive_response_headers.failed" in m and name in m for m in messages)
    assert not [m for m in messages if TOKEN[:16].decode() in m]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(
            b"HTTP/1.1 401 Unauthorized\rWWW-Authenticate: Negotiate " + TOKEN + b"\r\n\r\n",
            r"^Invalid status line b'HTTP/1.1 401 Unauthorized' \(shown up to a bare CR\)$",
            id="status-line",
        ),
        pytest.param(
            CHUNKED + b"0\rAuthorization: Negotiate " + TOKEN + b"\r\n\r\n",
            r"^Invalid chunk size line b'0' \(shown up to a bare CR\)$",
            id="chunk-size-line",
        ),
        pytest.param(
            b"HTTP/2.0 401 UnauthorizedWWW-Authenticate: Negotiate " + TOKEN + b"\r\n\r\n",
            r"^Invalid status line b'HTTP/2.0 401 UnauthorizedWWW-Authenticate' \(shown up to",
            id="status-line-without-line-end",
        ),
        pytest.param(
            CHUNKED + b"5Authorization: Negotiate " + TOKEN + b"\r\n\r\n",
            r"^Invalid chunk size line b'5Authorization' \(shown up to a colon\)$",
            id="chunk-size-line-without-line-end",
        ),
    ],
)
async def test_http11_line_shown_in_an_error_stops_before_a_header_value(
    serve: Callable[..., ScriptedServer], answer: bytes, message: str
) -> None:
    # Found by the differential fuzz: a bare CR in place of a CRLF, or no line end at all,
    # joins the next line, a header with its token, to the line the error shows.
    server = serve([answer, HANG], reply(b"recovered"))
    shown = await _refused(server, message)
    assert TOKEN[:8].decode() not in shown


# The connection's own refusals and clock, on HTTP11Connection directly.


class _Stream(httpcore.AsyncNetworkStream):
    """An in-memory stream: each request written gets the next response, then end of stream."""

    def __init__(self, *responses: bytes) -> None:
        self._responses = list(responses)
        self._pending = b""
        self.written: list[bytes] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written.append(buffer)
        if self._responses:
            self._pending += self._responses.pop(0)

    async def aclose(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        return False  # is_readable: the server has not written


def _connection(stream: _Stream, keepalive_expiry: float | None = None) -> HTTP11Connection:
    origin = httpcore.Origin(b"http", b"example.com", 80)
    return HTTP11Connection(origin, stream, keepalive_expiry)


HOST = (b"Host", b"example.com")


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "message"),
    [
        pytest.param(b"GE T", b"/", [HOST], [], r"Illegal request method", id="method"),
        pytest.param(b"GET", b"/a b", [HOST], [], r"Illegal request target", id="target"),
        pytest.param(b"GET", b"/", [HOST, (b"X A", b"1")], [], r"Illegal header name", id="name"),
        pytest.param(b"GET", b"/", [], [], r"^Missing mandatory Host: header$", id="no-host"),
        pytest.param(
            b"POST",
            b"/",
            [HOST, (b"Content-Length", b"9" * 5000)],
            [b"x"],
            r"not one decimal number of at most 20 digits",
            id="content-length-5000-digits",
        ),
        pytest.param(
            b"POST",
            b"/",
            [HOST, (b"Content-Length", b"5,")],
            [b"x"],
            r"Illegal Content-Length header",
            id="content-length-trailing-comma",
        ),
        pytest.param(
            b"POST",
            b"/",
            [HOST, (b"Content-Length", b"%d" % 2**63)],
            [b"x"],
            r"above 2\*\*63-1",
            id="content-length-2**63",
        ),
        pytest.param(
            b"POST",
            b"/",
            [HOST, (b"Transfer-Encoding", b"gzip")],
            [b"x"],
            r"Only Transfer-Encoding: chunked is supported",
            id="transfer-encoding",
        ),
        pytest.param(
            b"POST",
            b"/",
            [HOST, (b"Content-Length", b"5")],
            [b"abc"],
            r"^Request body ended after 3 of the 5 bytes of its Content-Length$",
            id="in-memory-body-short",
        ),
        pytest.param(
            b"POST",
            b"/",
            [HOST, (b"Content-Length", b"2")],
            [b"abc"],
            r"^Request body is 3 bytes long where its Content-Length says 2$",
            id="in-memory-body-long",
        ),
        pytest.param(
            b"GET",
            b"/",
            [HOST, (b"X-Api-Key", b"secret-key-1234\n")],
            [],
            r"^Illegal header value for 'X-Api-Key' .*value not shown\)$",
            id="header-value-not-shown",
        ),
    ],
)
async def test_http11_invalid_request_refused_before_anything_is_sent(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: Any, message: str
) -> None:
    stream = _Stream(reply(b"never"))
    connection = _connection(stream)
    with pytest.raises(httpcore.LocalProtocolError, match=message) as info:
        await connection.send(method, target, headers, body, {})
    assert stream.written == []  # nothing went out
    assert b"secret-key" not in str(info.value).encode()
    assert connection.has_expired()  # never reused after a failed request


class _FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_http11_connection_expires_after_its_keepalive_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(http11, "_clock", clock)
    stream = _Stream(reply(b"one"), reply(b"two"))
    connection = _connection(stream, keepalive_expiry=5.0)
    for expected in (b"one", b"two"):
        head = await connection.send(b"GET", b"/", [HOST], [], {})
        assert b"".join([part async for part in head.stream]) == expected
        clock.now += 4.9  # idle, but not for long enough
        assert connection.is_idle()
        assert not connection.has_expired()
    # The expiry counts from the end of the last response, not from the first.
    clock.now += 0.2
    assert connection.has_expired()


async def test_http11_expired_connection_replaced_by_the_pool(
    serve: Callable[..., ScriptedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(http11, "_clock", clock)
    server = serve(reply(b"one"), reply(b"two"), reply(b"three"))
    limits = httpx.Limits(keepalive_expiry=60.0)
    async with client(limits=limits) as c:
        first = await c.get(server.url)
        clock.now += 30.0
        second = await c.get(server.url)
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]
        clock.now += 60.5  # past the connection's own expiry (the pool's clock is real)
        third = await c.get(server.url)
        assert third.text == "three"
        assert third.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert [info.conn_id for info in c.connections] == [third.extensions[CONN_ID]]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 0, 1]


async def test_http11_connection_reused_at_exactly_its_expiry_not_after(
    serve: Callable[..., ScriptedServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # keepalive_expiry is how long an idle connection stays usable: at exactly that age it
    # still takes a request (as httpcore's `now > expire_at`); a moment later it does not.
    clock = _FakeClock()
    monkeypatch.setattr(http11, "_clock", clock)
    server = serve(reply(b"one"), reply(b"two"), reply(b"three"))
    async with client(limits=httpx.Limits(keepalive_expiry=60.0)) as c:
        first = await c.get(server.url)  # read to its end at 1000.0: usable until 1060.0
        clock.now = 1060.0
        second = await c.get(server.url)
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]
        clock.now = 1120.0 + 1e-6  # just past the second response's 1000 + 60 + 60
        third = await c.get(server.url)
        assert third.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(c)
    assert [r.conn for r in server.requests] == [0, 0, 1]


async def test_http11_connection_busy_past_its_old_expiry_is_not_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A connection taken just before it would have expired, then busy with a long response:
    # the deadline of its idle time before this request no longer applies, and the next one
    # counts from the end of the new response. Busy is never expired (the pool's
    # ConnectionLike promise: a connection reported expired is closed, here under its reader).
    clock = _FakeClock()
    monkeypatch.setattr(http11, "_clock", clock)
    stream = _Stream(reply(b"one"), reply(b"x" * 100_000))  # more than one read
    connection = _connection(stream, keepalive_expiry=5.0)
    head = await connection.send(b"GET", b"/", [HOST], [], {})
    assert b"".join([part async for part in head.stream]) == b"one"  # idle until 1005.0
    clock.now += 4.9
    head = await connection.send(b"GET", b"/", [HOST], [], {})
    body = head.stream.__aiter__()
    first = await body.__anext__()
    clock.now += 10.0  # 1014.9: past the old 1005.0, the body still coming
    assert not connection.is_idle()
    assert not connection.has_expired()
    rest = b"".join([part async for part in body])
    assert len(first + rest) == 100_000
    assert connection.is_idle()
    clock.now += 5.0  # 1019.9: the new expiry, from the end of the second response
    assert not connection.has_expired()
    clock.now += 0.1
    assert connection.has_expired()


# The rest of the connection's paths, each as a user would meet it.


async def test_http11_set_cookie_of_a_pooled_response_reaches_the_jar(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(reply(b"in", headers=[b"Set-Cookie: session=abc; Path=/"]), reply(b"back"))
    async with client() as c:
        await c.get(server.url)
        await c.get(server.url)
        assert c.cookies.get("session") == "abc"
    assert server.requests[1].headers[b"cookie"] == b"session=abc"  # sent back


async def test_http11_connect_tunnel_with_early_bytes_refuses_tls(
    serve: Callable[..., ScriptedServer],
) -> None:
    # A proxy that sends bytes after its 200 to CONNECT, before the TLS handshake: those
    # bytes would be read as the TLS server's, so start_tls is refused.
    server = serve([b"HTTP/1.1 200 Connection established\r\n\r\nEARLY", HANG])
    async with client() as c:
        async with c.stream("CONNECT", server.url) as response:
            assert response.status_code == 200
            stream = response.extensions["network_stream"]
            assert stream.get_extra_info("server_addr")[0] == "127.0.0.1"
            with pytest.raises(httpcore.ProxyError, match=r"sent data after its CONNECT"):
                await stream.start_tls(ssl.create_default_context(), "example.com")
            await stream.aclose()
        assert c.connections == []
        assert_pool_clean(c)
    server.wait_finished(1)  # the aclose() above really closed the socket


async def test_http11_connect_tunnel_starts_tls_when_nothing_came_early(
    serve: Callable[..., ScriptedServer],
) -> None:
    # No early bytes: the TLS handshake starts on the tunnel (here against a server that
    # answers it with garbage, so the handshake fails with a TLS error, not a ProxyError).
    # The garbage comes only once the client's ClientHello is in: nothing can come early.
    server = serve([b"HTTP/1.1 200 Connection established\r\n\r\n", READ, b"not tls\r\n", CLOSE])
    async with client() as c:
        async with c.stream("CONNECT", server.url) as response:
            stream = response.extensions["network_stream"]
            with pytest.raises(httpcore.ConnectError):
                await stream.start_tls(ssl.create_default_context(), "example.com", 2.0)
        assert_pool_clean(c)


async def test_http11_connection_repr_and_states() -> None:
    stream = _Stream(reply(b"x" * 100_000))  # more than one read: the body is still coming
    connection = _connection(stream)
    assert repr(connection) == "<HTTP11Connection [http://example.com:80, IDLE]>"
    head = await connection.send(b"GET", b"/", [HOST], [], {})
    assert repr(connection) == "<HTTP11Connection [http://example.com:80, ACTIVE]>"
    # Busy with a response: not expired (the pool must not close it under the reader), and
    # not available for a second request.
    assert not connection.has_expired()
    with pytest.raises(httpcore.ConnectionNotAvailable):
        await connection.send(b"GET", b"/", [HOST], [], {})
    assert b"".join([part async for part in head.stream]) == b"x" * 100_000
    assert connection.is_idle()


async def test_http11_connection_closed_while_its_body_is_read_stays_closed() -> None:
    # The pool closes a connection (client closed, cancellation) while its body is being
    # read: reaching the end of the body must not make it idle again.
    stream = _Stream(reply(b"x" * 100_000))
    connection = _connection(stream)
    head = await connection.send(b"GET", b"/", [HOST], [], {})
    await connection.aclose()
    assert len(b"".join([part async for part in head.stream])) == 100_000
    assert connection.is_closed()
    assert not connection.is_idle()


class _BodyClass:
    """A request body that is an async iterable but not an async generator."""

    def __init__(self, *parts: bytes) -> None:
        self._parts = list(parts)

    def __aiter__(self) -> _BodyClass:
        return self

    async def __anext__(self) -> bytes:
        if not self._parts:
            raise StopAsyncIteration
        return self._parts.pop(0)


async def test_http11_request_body_kinds_and_their_failures() -> None:
    # A sync iterable too large to go with the head is written part by part.
    stream = _Stream(reply(b"ok"))
    connection = _connection(stream)
    big = [b"a" * 40_000, b"b" * 40_000]
    headers = [HOST, (b"Content-Length", b"80000")]
    head = await connection.send(b"POST", b"/", headers, iter(big), {})
    assert b"".join([part async for part in head.stream]) == b"ok"
    assert b"".join(stream.written).endswith(b"\r\n\r\n" + b"".join(big))
    # A body class (not a generator) longer than its Content-Length: refused, not closed.
    connection = _connection(_Stream())
    with pytest.raises(httpcore.LocalProtocolError, match=r"3 bytes long .* says 2"):
        await connection.send(
            b"POST", b"/", [HOST, (b"Content-Length", b"2")], _BodyClass(b"abc"), {}
        )


async def test_http11_request_body_generator_failing_to_close_keeps_the_real_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> Any:
        try:
            yield b"abc"
            yield b"def"
        finally:
            raise RuntimeError("cleanup failed")

    connection = _connection(_Stream())
    headers = [HOST, (b"Content-Length", b"2")]
    with (
        caplog.at_level(logging.DEBUG, logger="httpx_extensions.http11"),
        pytest.raises(httpcore.LocalProtocolError, match=r"says 2$"),
    ):
        await connection.send(b"POST", b"/", headers, body(), {})
    assert any("cleanup failed" in r.getMessage() for r in caplog.records)


async def test_http11_request_with_chunked_then_content_length_goes_chunked() -> None:
    # As httpcore does: Transfer-Encoding wins, the Content-Length that follows is kept.
    stream = _Stream(reply(b"ok"))
    connection = _connection(stream)
    headers = [HOST, (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")]
    head = await connection.send(b"POST", b"/", headers, [b"abc"], {})
    assert b"".join([part async for part in head.stream]) == b"ok"
    assert b"".join(stream.written).endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


async def test_http11_traced_streamed_response_closed_early(
    serve: Callable[..., ScriptedServer],
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234"
    closed = threading.Event()  # the rest of the body comes once the response is closed
    server = serve([head, Until(closed), b"56789"], reply(b"next"))
    events: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        events.append(name)

    async with client() as c:
        async with c.stream("GET", server.url, extensions={"trace": trace}) as response:
            assert response.status_code == 200  # closed without reading the body
        closed.set()
        assert events[-2:] == ["http11.response_closed.started", "http11.response_closed.complete"]
        assert c.connections == []  # closed mid-body: not reused
        assert (await c.get(server.url)).text == "next"
        assert_pool_clean(c)
