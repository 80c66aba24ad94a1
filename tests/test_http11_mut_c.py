"""Bounds of ``_http11.py`` that the mutation check (``scripts/mutate http11``) found untested.

Each test plays a server on a real loopback socket (the scripted server of
``tests/test_http11.py``) through ``ExClient`` and checks what a user sees: a response that
opens with an empty line is refused at once as not HTTP (not left to a read timeout, and the
error shows the empty line, not what follows it); a head one byte over its bound
(MAX_HEAD_SIZE plus the blank line) is refused even when its end arrives in the last read; a
chunk-size line stops the read when it reaches MAX_HEAD_SIZE bytes, and one whose line end
comes one byte past the bound is refused; a long line in an error message is cut to its
first 100 bytes, also where it is cut at a bare CR or a colon. The request header block
kept on the connection for the next identical request is checked on ``HTTP11Connection``
itself (as ``tests/test_http11_hardening.py`` does for the request side): a plain one is
kept, one carrying credentials or a cookie never is. A traced response closed with its body
half read ends the body's trace event at once and leaves no generator to the collector.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import warnings
from collections.abc import Callable
from typing import Any

import httpcore
import pytest

from httpx_extensions._http11 import MAX_HEAD_SIZE

from . import test_http11
from .conftest import assert_pool_clean
from .test_http11 import HANG, ScriptedServer, Until, client, reply
from .test_http11_hardening import CHUNKED, HOST, _connection, _refused, _Stream

pytestmark = pytest.mark.anyio


# The scripted server's fixture, shared with tests/test_http11.py.
serve = test_http11.serve

_NOT_HTTP = r"^Invalid status line b'': the server did not answer with HTTP/1\.x$"


@pytest.mark.parametrize(
    "answer",
    [
        # Nothing but an empty line: the head ends at the very first byte.
        pytest.param(b"\n\r\n", id="empty-line-only"),
        # An empty line, then what looks like a response: the status line is the empty one.
        pytest.param(b"\n" + reply(b"hi"), id="empty-line-then-a-response"),
    ],
)
async def test_http11_response_opening_with_an_empty_line_refused_at_once(
    serve: Callable[..., ScriptedServer], answer: bytes
) -> None:
    # As h11 ("no response line received"): the first line of a response is its status
    # line, and an empty one is not HTTP. The server then sends nothing more and keeps the
    # connection open: the refusal comes from the bytes received, not from a read timeout,
    # and it shows the empty line (not the next one, which may be a header).
    server = serve([answer, HANG], reply(b"recovered"))
    await _refused(server, _NOT_HTTP)


@pytest.mark.parametrize("pause", [False, True], ids=["one-send", "end-after-a-pause"])
async def test_http11_head_one_byte_over_its_bound_refused(
    serve: Callable[..., ScriptedServer], pause: bool
) -> None:
    # A head may take MAX_HEAD_SIZE bytes plus its blank line's CRLF CRLF (the bound
    # read at exactly that size is in tests/test_http11_mut_b.py); one byte more is
    # refused, also when the blank line comes in the read that completes the head.
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Big: "
    head = start + b"a" * (MAX_HEAD_SIZE + 1 - len(start)) + b"\r\n\r\n"
    assert len(head) == MAX_HEAD_SIZE + 5
    answer = [head[:MAX_HEAD_SIZE], 0.05, head[MAX_HEAD_SIZE:] + b"hi"] if pause else [head]
    server = serve([*answer, HANG], reply(b"recovered"))
    await _refused(server, rf"^Response head larger than {MAX_HEAD_SIZE} bytes$")


async def test_http11_chunk_size_line_stopped_when_it_reaches_the_bound(
    serve: Callable[..., ScriptedServer],
) -> None:
    # Exactly MAX_HEAD_SIZE bytes of a chunk-size line, no line end, then nothing (the
    # connection kept open): the bound is reached, so the client refuses now rather than
    # wait for a byte that could only make the line too long.
    line = b"1;" + b"x" * (MAX_HEAD_SIZE - 2)
    server = serve([CHUNKED + line, HANG], reply(b"recovered"))
    await _refused(server, rf"^Response chunk size line longer than {MAX_HEAD_SIZE} bytes$")


@pytest.mark.parametrize("extra", [0, 1], ids=["at-the-bound", "one-byte-over"])
async def test_http11_chunk_size_line_bounded_with_its_line_end(
    serve: Callable[..., ScriptedServer], extra: int
) -> None:
    # A chunk-size line (padded with the whitespace servers put after a size) of
    # MAX_HEAD_SIZE bytes, its CRLF included, is read; one byte more is refused. The line
    # end comes in the same read as the bytes that take the line to its bound.
    line = b"5" + b" " * (MAX_HEAD_SIZE - 3 + extra) + b"\r\n"
    assert len(line) == MAX_HEAD_SIZE + extra
    rest = line[60_000:] + b"hello\r\n0\r\n\r\n"
    server = serve([CHUNKED + line[:60_000], 0.05, rest], reply(b"recovered"))
    if extra:
        await _refused(server, rf"^Response chunk size line longer than {MAX_HEAD_SIZE} bytes$")
        return
    async with client() as c:
        response = await c.get(server.url)
        assert (response.status_code, response.content) == (200, b"hello")
        assert_pool_clean(c)


_REASON = b"R" * 150


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        pytest.param(
            # An unparsable status (four digits), a long reason, then a bare CR.
            b"HTTP/1.1 2000 " + _REASON + b"\rX-A: b\r\n\r\n",
            rb"Invalid status line b'HTTP/1.1 2000 "
            + _REASON[:86]
            + rb"' \(shown up to a bare CR\)",
            id="status-line-bare-cr",
        ),
        pytest.param(
            # A chunk-size line with a long invalid extension, then a colon and a value.
            CHUNKED + b"5;" + _REASON + b"=a b: secret\r\nhello\r\n0\r\n\r\n",
            rb"Invalid chunk size line b'5;" + _REASON[:98] + rb"' \(shown up to a colon\)",
            id="chunk-size-line-colon",
        ),
    ],
)
async def test_http11_long_line_shown_in_an_error_is_cut_at_100_bytes(
    serve: Callable[..., ScriptedServer], answer: bytes, message: bytes
) -> None:
    # The error names the line, but a server's garbage of any length must not fill the
    # user's logs: what is shown stops after 100 bytes, before the CR or colon beyond.
    server = serve([answer, HANG], reply(b"recovered"))
    await _refused(server, "^" + message.decode() + "$")


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param((b"Authorization", b"Basic c2VjcmV0LXRva2Vu"), id="authorization"),
        pytest.param((b"Proxy-Authorization", b"Basic c2VjcmV0LXRva2Vu"), id="proxy"),
        pytest.param((b"Cookie", b"session=secret-token"), id="cookie"),
    ],
)
async def test_http11_request_header_block_with_a_secret_not_kept(
    secret: tuple[bytes, bytes],
) -> None:
    # A connection keeps the last request's checked header block so that the next
    # identical request skips the checks; a block carrying a credential or a cookie is
    # not kept on the connection (nor is anything of it) once its request is sent.
    stream = _Stream(reply(b"one"), reply(b"two"), reply(b"three"))
    connection = _connection(stream)

    async def get(headers: list[tuple[bytes, bytes]]) -> bytes:
        head = await connection.send(b"GET", b"/", headers, [], {})
        return b"".join([part async for part in head.stream])

    plain = [HOST, (b"Accept", b"*/*")]
    assert await get(plain) == b"one"
    kept = connection._last_headers
    assert kept is not None
    assert kept[:2] == (plain, b"Host: example.com\r\nAccept: */*\r\n\r\n")
    # Only Host besides the secret: nothing else in the block could keep it from the cache.
    assert await get([HOST, secret]) == b"two"
    assert connection._last_headers is None
    assert secret[1] in stream.written[1]  # it did go out, in its own request
    assert await get(plain) == b"three"  # a plain block is kept again
    assert connection._last_headers is not None


async def test_http11_traced_response_closed_half_read_ends_its_body_event(
    serve: Callable[..., ScriptedServer],
) -> None:
    # A traced response closed with its body half read: the body's event ends then (failed,
    # with the GeneratorExit httpcore's body generator reports once collected), before
    # response_closed, and no async generator is left suspended for the garbage collector
    # to finish at some later time (trio warns of each one).
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234"
    closed = threading.Event()  # the rest of the body comes once the response is closed
    server = serve([head, Until(closed), b"56789"], reply(b"next"))
    events: list[tuple[str, dict[str, Any]]] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        events.append((name, info))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with client() as c:
            async with (
                c.stream("GET", server.url, extensions={"trace": trace}) as response,
                contextlib.aclosing(response.aiter_raw()) as body,
            ):
                assert await anext(body) == b"01234"
            closed.set()
            assert [name for name, _ in events][-4:] == [
                "http11.receive_response_body.started",
                "http11.receive_response_body.failed",
                "http11.response_closed.started",
                "http11.response_closed.complete",
            ]
            failed = dict(events)["http11.receive_response_body.failed"]
            assert isinstance(failed["exception"], GeneratorExit)
            assert c.connections == []  # closed mid-body: not reused
            assert (await c.get(server.url)).text == "next"
            assert_pool_clean(c)
        del response, body
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_http11_chunk_size_of_17_digits_refused_whatever_its_value(
    serve: Callable[..., ScriptedServer],
) -> None:
    # At most 16 hex digits (RFC 9112 allows any, h11 20): a 17th digit is refused even as
    # a leading zero, where the value (5) is small.
    size = b"0" * 16 + b"5"
    server = serve([CHUNKED + size + b"\r\nhello\r\n0\r\n\r\n", HANG], reply(b"recovered"))
    await _refused(
        server, r"^Chunk size too large \(more than 16 hex digits, or above 2\*\*63-1\)$"
    )


@pytest.mark.parametrize("extra", [0, 1], ids=["at-the-bound", "one-byte-over"])
async def test_http11_trailer_section_bounded_to_the_byte(
    serve: Callable[..., ScriptedServer], extra: int
) -> None:
    # The trailer section, every line with its CRLF and the blank line that ends it, may
    # take MAX_HEAD_SIZE bytes; one byte more is refused, however many lines it is cut into.
    line = b"X-T: " + b"t" * 1000 + b"\r\n"
    count, rest = divmod(MAX_HEAD_SIZE - 2 + extra, len(line))
    trailers = line * count + b"X-U: " + b"u" * (rest - 7) + b"\r\n"
    assert len(trailers) + 2 == MAX_HEAD_SIZE + extra
    body = CHUNKED + b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n"
    server = serve([body, HANG], reply(b"recovered"))
    if extra:
        await _refused(server, rf"^Response trailer section larger than {MAX_HEAD_SIZE} bytes$")
        return
    async with client() as c:
        response = await c.get(server.url)
        assert (response.status_code, response.content) == (200, b"hello")
        assert_pool_clean(c)


async def test_http11_in_memory_body_of_64_kib_of_the_wrong_length_refused_before_sending() -> None:
    # An in-memory body up to 64 KiB goes out with its head in one write, so a length that
    # differs from its Content-Length is refused before anything is sent; 64 KiB is such
    # a body.
    stream = _Stream(reply(b"never"))
    connection = _connection(stream)
    headers = [HOST, (b"Content-Length", b"65536")]
    message = r"^Request body is 65537 bytes long where its Content-Length says 65536$"
    with pytest.raises(httpcore.LocalProtocolError, match=message):
        await connection.send(b"POST", b"/", headers, [b"x" * 65537], {})
    assert stream.written == []  # nothing went out


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\n", id="no-framing-header"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 2\r\n\r\n", id="framed"),
    ],
)
async def test_http11_plain_crlf_head_parsed_without_the_line_by_line_parser(
    monkeypatch: pytest.MonkeyPatch, head: bytes
) -> None:
    # The one-pass parse of CRLF lines (and its line cache) is what makes a request cheap;
    # the line-by-line parser is only for folded, bare-LF or invalid heads.
    from httpx_extensions import _http11

    calls: list[str] = []
    parse_fields = _http11._parse_fields

    def spy(block: bytes, section: str) -> Any:
        calls.append(section)
        return parse_fields(block, section)

    monkeypatch.setattr(_http11, "_parse_fields", spy)
    stream = _Stream(head + b"hi")
    connection = _connection(stream)
    response = await connection.send(b"GET", b"/", [HOST], [], {})
    assert response.headers[0] == (b"X-A", b"b")
    assert calls == []
    folded = _connection(_Stream(b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n"))
    assert (await folded.send(b"GET", b"/", [HOST], [], {})).headers[0] == (b"X-A", b"b c")
    assert calls == ["response head"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param(b":secret", r"b'' \(shown up to a colon\)", id="colon-first"),
        pytest.param(b"\r:secret", r"b'' \(shown up to a bare CR\)", id="cr-first"),
        pytest.param(b"\rsecret", r"b'' \(shown up to a bare CR\)", id="cr-first-no-colon"),
    ],
)
async def test_http11_line_shown_in_an_error_that_starts_at_its_cut_shows_nothing(
    serve: Callable[..., ScriptedServer], line: bytes, message: str
) -> None:
    # A colon or a bare CR as the line's very first byte: nothing before it is shown, and
    # above all nothing after it (where a header value could be).
    answer = CHUNKED + line + b"\r\nhello\r\n0\r\n\r\n"
    server = serve([answer, HANG], reply(b"recovered"))
    shown = await _refused(server, r"^Invalid chunk size line " + message + "$")
    assert "secret" not in shown


class _Stop(Exception):
    pass


async def test_http11_request_content_length_of_2_63_minus_1_goes_out() -> None:
    # The largest Content-Length a request may declare is written, not refused (one more
    # is refused: tests/test_http11_hardening.py).
    async def body() -> Any:
        yield b"abc"
        raise _Stop  # the rest is not needed to see what went out

    stream = _Stream()
    connection = _connection(stream)
    headers = [HOST, (b"Content-Length", b"%d" % (2**63 - 1))]
    with pytest.raises(_Stop):
        await connection.send(b"POST", b"/", headers, body(), {})
    assert stream.written[0] == (
        b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 9223372036854775807\r\n\r\n"
    )
    assert stream.written[1:] == [b"abc"]


@pytest.mark.parametrize(
    ("lengths", "refused"),
    [
        pytest.param([b"3", b"3"], False, id="same-twice"),
        pytest.param([b"3", b"4"], True, id="two-values"),
    ],
)
async def test_http11_request_content_length_repeated(lengths: list[bytes], refused: bool) -> None:
    # The same Content-Length twice frames the body as one; two values are refused before
    # anything is sent (h11 does the same).
    stream = _Stream(reply(b"ok"))
    connection = _connection(stream)
    headers = [HOST, *[(b"Content-Length", length) for length in lengths]]
    if refused:
        with pytest.raises(httpcore.LocalProtocolError, match=r"^Conflicting Content-Length"):
            await connection.send(b"POST", b"/", headers, [b"abc"], {})
        assert stream.written == []
        return
    head = await connection.send(b"POST", b"/", headers, [b"abc"], {})
    assert b"".join([part async for part in head.stream]) == b"ok"
    assert b"".join(stream.written).endswith(b"Content-Length: 3\r\n\r\nabc")
    assert connection.is_idle()


async def test_http11_request_connection_option_containing_close_keeps_the_connection() -> None:
    # Only the token "close" closes: a Connection header naming another option that merely
    # contains the word (here a hop-by-hop header X-Closed) keeps the connection alive.
    stream = _Stream(reply(b"ok"), reply(b"again"))
    connection = _connection(stream)
    head = await connection.send(b"GET", b"/", [HOST, (b"Connection", b"X-Closed")], [], {})
    assert b"".join([part async for part in head.stream]) == b"ok"
    assert connection.is_idle()
