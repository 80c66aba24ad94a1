"""The parsed-line caches of ``_http11.py``: a header or status line seen before is looked up
instead of parsed again. Whatever the caches hold, a response parses to what a first parse
gives (pairs, httpx's lowercased list, framing, keep-alive); lines that may carry secrets are
never kept; the caches stay bounded. The connection is driven over an in-memory stream, as
in ``test_http11.py``'s segmentation property.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpcore
import pytest

from httpx_extensions import _http11
from httpx_extensions._http11 import HTTP11Connection

from .test_http11 import _run, _SegmentStream


@pytest.fixture(autouse=True)
def _empty_caches() -> Iterator[None]:
    _http11._LINES.clear()
    _http11._STATUS_LINES.clear()
    yield
    _http11._LINES.clear()
    _http11._STATUS_LINES.clear()


async def _exchange(raw: bytes) -> tuple[Any, ...]:
    connection = HTTP11Connection(
        httpcore.Origin(b"http", b"example.com", 80), _SegmentStream([raw])
    )
    head = await connection.send(b"GET", b"/", [(b"Host", b"example.com")], [], {})
    body = b"".join([part async for part in head.stream])
    return (
        head.status,
        head.reason,
        head.http_version,
        head.headers,
        head.header_list,
        head.set_cookie,
        body,
        connection.is_idle(),
    )


def parse(raw: bytes) -> tuple[Any, ...]:
    return _run(_exchange(raw))  # type: ignore[no-any-return]


RESPONSES = {
    "content-length": b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 2\r\n\r\nhi",
    "connection close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
    "keep-alive, two lengths": (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n"
        b"Content-Length: 2\r\n\r\nhi"
    ),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    "chunked and length": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n"
    ),
    "set-cookie": b"HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\nContent-Length: 2\r\n\r\nhi",
    "http/1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    "no headers, read to close": b"HTTP/1.1 200 Fine\r\n\r\nhi",
    "bare LF": b"HTTP/1.1 200 OK\nX-A: b\nContent-Length: 2\n\nhi",
    "mixed line ends": b"HTTP/1.1 200 OK\r\nX-A: b\nContent-Length: 2\r\n\r\nhi",
    "padded values, empty value": (
        b"HTTP/1.1 200 OK\r\nX-A: \t b c \t\r\nX-Empty:\r\nContent-Length:  2 \r\n\r\nhi"
    ),
}


@pytest.mark.parametrize("raw", RESPONSES.values(), ids=RESPONSES.keys())
def test_http11_line_cache_warm_parse_equals_cold_parse(raw: bytes) -> None:
    cold = parse(raw)
    assert cold[4] == [(key, key.lower(), value) for key, value in cold[3]]
    assert _http11._STATUS_LINES  # something was cached...
    assert parse(raw) == cold  # ...and gives what parsing gave


def test_http11_line_cache_framing_of_a_cached_line_still_applies() -> None:
    # The second time round every line comes from the cache: the framing it carries must
    # still close the connection, frame the body, and flag the cookie.
    close = RESPONSES["connection close"]
    assert parse(close)[-1] is False
    assert parse(close)[-1] is False
    chunked = RESPONSES["chunked and length"]
    assert parse(chunked)[-2:] == (b"hi", False)  # smuggling-shaped: not reused
    assert parse(chunked)[-2:] == (b"hi", False)
    cookie = RESPONSES["set-cookie"]
    assert parse(cookie)[5] is True
    assert parse(cookie)[5] is True
    plain = RESPONSES["content-length"]
    assert parse(plain)[5:] == (False, b"hi", True)


def test_http11_line_cache_cached_line_before_a_folded_one_is_joined() -> None:
    parse(b"HTTP/1.1 200 OK\r\nX-A: one\r\nContent-Length: 0\r\n\r\n")
    assert b"X-A: one" in _http11._LINES
    folded = parse(b"HTTP/1.1 200 OK\r\nX-A: one\r\n  two\r\nContent-Length: 0\r\n\r\n")
    assert folded[3] == [(b"X-A", b"one two"), (b"Content-Length", b"0")]
    assert folded[4] == [(b"X-A", b"x-a", b"one two"), (b"Content-Length", b"content-length", b"0")]


def test_http11_line_cache_cached_lines_do_not_hide_an_invalid_one() -> None:
    parse(b"HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 0\r\n\r\n")
    for bad in (b"X-A: b\rX", b"X A: b", b"X-A: b\x01", b": b", b"X-A b"):
        raw = b"HTTP/1.1 200 OK\r\nX-A: b\r\n" + bad + b"\r\nContent-Length: 0\r\n\r\n"
        with pytest.raises(httpcore.RemoteProtocolError, match="Invalid header line"):
            parse(raw)


def test_http11_line_cache_keeps_no_credentials_or_cookies() -> None:
    secrets = [
        b"WWW-Authenticate: NTLM TlRMTVNTUAACAAAAsecret1",
        b"Proxy-Authenticate: Negotiate oRQwEqADCgEAsecret2",
        b"Authentication-Info: rspauth=secret3",
        b"Proxy-Authentication-Info: rspauth=secret4",
        b"Set-Cookie: session=secret5",
        b"set-cookie2: session=secret6",
        b"Authorization: Basic secret7",
        b"Proxy-Authorization: Basic secret8",
    ]
    raw = (
        b"HTTP/1.1 401 Unauthorized\r\n" + b"\r\n".join(secrets) + b"\r\nContent-Length: 0\r\n\r\n"
    )
    for _ in range(2):
        got = parse(raw)
        assert [b"%b: %b" % pair for pair in got[3][:-1]] == secrets
    kept = repr(list(_http11._LINES.items()))
    assert "secret" not in kept
    assert b"Content-Length: 0" in _http11._LINES  # the harmless line is kept


def test_http11_line_cache_long_lines_not_kept() -> None:
    line = b"X-Long: " + b"a" * _http11._LINE_MAX_BYTES
    got = parse(b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n")
    assert got[3][0] == (b"X-Long", b"a" * _http11._LINE_MAX_BYTES)
    assert line not in _http11._LINES


def test_http11_line_cache_stays_bounded_and_right() -> None:
    for i in range(3 * _http11._LINES_MAX):
        raw = b"HTTP/1.1 200 R%d\r\nX-Id: %d\r\nContent-Length: 1\r\n\r\nx" % (i, i)
        got = parse(raw)
        assert (got[1], got[3], got[-1]) == (
            b"R%d" % i,
            [(b"X-Id", b"%d" % i), (b"Content-Length", b"1")],
            True,
        )
        assert len(_http11._LINES) <= _http11._LINES_MAX
        assert len(_http11._STATUS_LINES) <= _http11._STATUS_LINES_MAX


def test_http11_status_line_cache_does_not_hide_an_invalid_status_line() -> None:
    parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    for bad in (b"HTTP/1.1 200 OK\r", b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"ICY 200 OK"):
        with pytest.raises(httpcore.RemoteProtocolError, match="Invalid status line"):
            parse(bad + b"\r\nContent-Length: 0\r\n\r\n")
    assert parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")[:3] == (200, b"OK", b"HTTP/1.1")
