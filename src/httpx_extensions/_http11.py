r"""One HTTP/1.1 client connection: writes a request, parses the response, keeps it alive.

httpcore's ``AsyncHTTP11Connection`` drives h11's general-purpose state machine and takes an
anyio lock twice per request; profiled under the pool at concurrency 50 that was about half of
the client's CPU per request. The pool already guarantees that one request at a time uses a
connection, so this connection needs neither the lock nor a general state machine: it keeps
one state (``IDLE``/``ACTIVE``/``CLOSED``) and parses with a few compiled regular expressions.

What it accepts and refuses follows h11 (what httpcore, and so httpx, accept) and RFC 9112:

* request: method and target must be tokens/visible characters, header names tokens, header
  values without control characters or surrounding whitespace, a ``Host`` header required;
  the body is framed by the request's ``Content-Length`` or ``Transfer-Encoding: chunked``
  (httpx sets one of them), and a body longer than its ``Content-Length`` is refused;
* response: ``HTTP/1.x`` status line, lines ending in CRLF or a bare LF, obsolete line folding
  joined with a space, a header block of at most :data:`MAX_HEAD_SIZE` bytes, informational
  (1xx) responses skipped (at most :data:`MAX_INFORMATIONAL` of them, together at most
  :data:`MAX_HEAD_SIZE` bytes), framing by ``Transfer-Encoding: chunked`` (trailers checked
  as header lines, at most :data:`MAX_HEAD_SIZE` bytes, and dropped), ``Content-Length``
  (``1*DIGIT``, at most 2**63-1; a list or repeat of one identical value allowed), or the end
  of the connection;
* chunked framing as RFC 9112 section 7.1 has it: the chunk-size line and the end of the chunk
  data end in CRLF (the bare-LF leniency of section 2.2 covers the start line and field lines
  only), a chunk size has at most 16 hex digits (at most 2**63-1), chunk extensions follow
  the grammar (``;name``, ``;name=token``, ``;name="quoted"``);
* a bare CR is refused everywhere (``\r\r\n`` is not a line end);
* the connection is kept alive unless either side said ``Connection: close``, the response
  is HTTP/1.0 (a higher minor version is read as 1.1, RFC 9110 2.5), its body ran to the
  end of the connection, or it carried both ``Transfer-Encoding`` and ``Content-Length``
  (RFC 9112 6.3: the chunked framing is used, but such a message may be a smuggling
  attempt, so the connection is not trusted again);
* a ``101 Switching Protocols`` answer to an ``Upgrade`` request and a 2xx answer to
  ``CONNECT`` hand over the stream in ``response.extensions["network_stream"]`` (with any
  bytes already read in front of it); the connection is then out of HTTP and is not reused.

Every refusal of the server's bytes is an ``httpcore.RemoteProtocolError`` (which httpx maps
to ``httpx.RemoteProtocolError``) that names the problem, and the header, but never shows a
header value: a malformed ``WWW-Authenticate`` or ``Set-Cookie`` line must not carry its
token into an error message or a log. Only the status line and chunk-size lines are shown,
truncated, and cut before any CR or colon (past which a header could follow, when the server
dropped a line end).

Where this parser is more lenient than h11 (each allowed by the RFC; the differential test
``tests/test_http11_differential.py`` encodes each as an explicit exception):

* empty list elements in ``Transfer-Encoding`` (``chunked,`` or ``, chunked``): RFC 9110
  5.6.1 says a recipient MUST accept them; h11 compares the whole value with ``chunked``;
* whitespace before a chunk extension's ``;`` (``5 ;name``): the ``BWS`` of RFC 9112 7.1.1's
  ``chunk-ext``; h11 refuses it.

Where it is stricter than h11 (each forbidden by the RFC):

* control characters other than HTAB (``\x01``-``\x08``, ``\x0e``-``\x1f``, ``\x7f``) in
  a header value, trailer value or reason phrase (RFC 9110 5.5 makes them invalid; h11 keeps
  them);
* chunk extensions outside the grammar and chunk sizes of 17 to 20 hex digits (h11 takes any
  bytes after ``;`` and up to 20 digits);
* a status line whose version is not ``HTTP/1.x``, and a Content-Length above 2**63-1 (h11
  takes any ``HTTP/d.d`` and up to 20 digits);
* more than :data:`MAX_INFORMATIONAL` informational responses, or more than
  :data:`MAX_HEAD_SIZE` bytes of them or of trailers (h11 bounds each event only).

Headers are returned as received: where h11 folds repeated ``Content-Length`` headers into
one and lowercases ``Transfer-Encoding``, they stay as the server sent them.

Every response carries ``http_version``, ``reason_phrase`` and ``network_stream`` extensions
as httpcore's do, and a request's ``trace`` extension receives httpcore's ``http11.*`` events.
DEBUG logging goes to ``httpx_extensions.http11`` with the values of authentication headers
replaced by ``[redacted]``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import ssl
import time
import typing
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import httpcore

from ._synchronization import async_checkpoint, async_shield

__all__ = ["MAX_HEAD_SIZE", "MAX_INFORMATIONAL", "HTTP11Connection", "ResponseHead"]

logger = logging.getLogger("httpx_extensions.http11")

#: Largest response status line + header block accepted: httpcore's limit (it raises h11's
#: 16 KiB default to this), so what stock httpx accepts, ExClient accepts.
MAX_HEAD_SIZE = 100 * 1024
#: Most informational (1xx) responses accepted before the answer. Real servers send one
#: ``100 Continue`` or a few ``103 Early Hints`` (``102 Processing``, the one sent repeatedly,
#: was dropped from WebDAV by RFC 4918); a server that keeps sending them holds the request
#: open without answering it, and the read timeout never fires while bytes keep coming.
MAX_INFORMATIONAL = 100
# Content-Length and chunk sizes above this are refused (as curl does): no real body is that
# large, and it keeps every length a signed 64-bit integer for whoever handles it next.
_MAX_LENGTH = 2**63 - 1
_READ_SIZE = 64 * 1024
# A body up to this size goes out in the same write as the request head.
_COALESCE_LIMIT = 64 * 1024

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VALUE = rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
_TOKEN_RE = re.compile(_TOKEN)
_VALUE_RE = re.compile(_VALUE)
_TARGET_RE = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_STATUS_LINE_RE = re.compile(rb"HTTP/(1\.[0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_HEADER_LINE = rb"(" + _TOKEN + rb"):[ \t]*(" + _VALUE + rb")[ \t]*"
_HEADER_LINE_RE = re.compile(_HEADER_LINE)
_HEAD_END_RE = re.compile(rb"\n\r?\n")
# RFC 9110 5.6.4 quoted-string: qdtext or a quoted-pair.
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 9112 7.1: chunk-size [ chunk-ext ], chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS
# token / quoted-string ] ), and trailing whitespace as h11 allows (servers pad sizes).
# (Every repetition starts at a ";", so whitespace runs cannot be split two ways: linear.)
_CHUNK_SIZE_RE = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*[ \t]*"
)
_DIGITS_RE = re.compile(rb"[0-9]{1,20}")  # h11's bound on Content-Length digits

_checkpoint = async_checkpoint
# The keep-alive clock, looked up at each use so that tests can replace it with a fake one.
_clock = time.monotonic

_REDACTED_HEADERS = frozenset(
    {b"authorization", b"proxy-authorization", b"www-authenticate", b"proxy-authenticate"}
)
# Header blocks carrying these are not kept on the connection for the next request.
_UNCACHED_HEADERS = _REDACTED_HEADERS | {b"cookie"}
_NO_BODY_STATUS = frozenset({204, 304})
_FRAMING_HEADERS = frozenset({b"connection", b"transfer-encoding", b"content-length"})
_SET_COOKIE_HEADERS = frozenset({b"set-cookie", b"set-cookie2"})

# BROKEN: not reusable (mid-request failure, no keep-alive, upgraded) but its stream is open
# until the pool closes it.
_IDLE, _ACTIVE, _BROKEN, _CLOSED = "IDLE", "ACTIVE", "BROKEN", "CLOSED"

Headers = list[tuple[bytes, bytes]]
# (name, lowercased name, value): how httpx.Headers keeps a header (its ``_list``).
HeaderList = list[tuple[bytes, bytes, bytes]]

# One framing header, parsed: (lowercased name, its data): Content-Length and
# Transfer-Encoding: their list elements; Connection: whether it says close; Set-Cookie: None.
_FramingPart = tuple[bytes, Any]

# Header lines already parsed, by their bytes: (name, value), (name, lowered name, value),
# and what the line says about the framing (None for most lines; see _framing_part). A
# server repeats most of its lines response after response (Server, Content-Type,
# Connection, Date within a second); a line seen before costs one dict lookup instead of a
# regex match, a lower() and the framing checks (together about a tenth of the client's
# instructions per request). Lines that may carry a secret (challenges, cookies) are never
# kept, nor long ones; the cache is emptied when full, so a server that never repeats a
# line costs a little memory, not time.
_Line = tuple[tuple[bytes, bytes], tuple[bytes, bytes, bytes], _FramingPart | None]
_LINES: dict[bytes, _Line] = {}
_LINES_MAX = 512
_LINE_MAX_BYTES = 256
_UNCACHED_LINES = frozenset(
    {
        b"authorization",
        b"proxy-authorization",
        b"www-authenticate",
        b"proxy-authenticate",
        b"authentication-info",
        b"proxy-authentication-info",
        b"set-cookie",
        b"set-cookie2",
    }
)
# Status lines already parsed: (status, reason, version); the same few come back.
_STATUS_LINES: dict[bytes, tuple[int, bytes, bytes]] = {}
_STATUS_LINES_MAX = 64


class ResponseHead(typing.NamedTuple):
    """What :meth:`HTTP11Connection.send` returns: the response without its body yet."""

    status: int
    reason: bytes
    http_version: bytes
    headers: Headers
    stream: typing.AsyncIterable[bytes]
    network_stream: httpcore.AsyncNetworkStream
    #: False when the head has no ``Set-Cookie``/``Set-Cookie2`` header (nothing for a jar).
    set_cookie: bool = True
    #: ``headers`` as ``httpx.Headers`` keeps them (name, lowercased name, value), when the
    #: parser has them at hand (None otherwise: derive them from ``headers``).
    header_list: HeaderList | None = None


def _redact(headers: Headers) -> Headers:
    return [(k, b"[redacted]" if k.lower() in _REDACTED_HEADERS else v) for k, v in headers]


def _comma_values(headers: Headers, name: bytes) -> list[bytes]:
    """The comma-separated values of every ``name`` header, lowercased."""
    return [
        token
        for key, value in headers
        if key.lower() == name
        for token in _split_tokens(value)
        if token
    ]


def _framing_part(lower: bytes, value: bytes) -> _FramingPart:
    """What one framing header (``lower`` in _FRAMING_HEADERS or _SET_COOKIE_HEADERS) says."""
    if lower == b"content-length":
        # Empty elements kept: "5," is not a valid Content-Length (RFC 9110 8.6).
        return lower, tuple(p.strip(b" \t") for p in value.split(b","))
    if lower in _SET_COOKIE_HEADERS:
        return lower, None
    parts = tuple(p.strip().lower() for p in value.split(b",") if p.strip())
    if lower == b"connection":
        return lower, b"close" in parts
    return lower, parts


class _Framing(typing.NamedTuple):
    """What a response's headers say about its body and the connection, in one pass."""

    close: bool
    transfer_encoding: list[bytes] | None  # None when the header is absent
    content_length: list[bytes] | None
    set_cookie: bool

    @classmethod
    def of(cls, headers: Headers) -> _Framing:
        return cls.combine(
            [
                _framing_part(lower, value)
                for key, value in headers
                if (lower := key.lower()) in _FRAMING_HEADERS or lower in _SET_COOKIE_HEADERS
            ]
        )

    @classmethod
    def combine(cls, parts: Iterable[_FramingPart]) -> _Framing:
        """The framing of a head from the :func:`_framing_part` of its framing headers."""
        close = set_cookie = False
        encodings: list[bytes] | None = None
        lengths: list[bytes] | None = None
        for lower, data in parts:
            if lower == b"content-length":
                lengths = list(data) if lengths is None else lengths + list(data)
            elif lower == b"connection":
                close = close or data
            elif lower == b"transfer-encoding":
                encodings = list(data) if encodings is None else encodings + list(data)
            else:  # Set-Cookie, Set-Cookie2
                set_cookie = True
        # cls(...) without the Python-level __new__ that NamedTuple generates.
        return tuple.__new__(cls, (close, encodings, lengths, set_cookie))

    def body_length(self) -> int | None:
        """The Content-Length, or None without one.

        Raises:
            httpcore.RemoteProtocolError: not ``1*DIGIT`` (or a list of one repeated value), or
                above 2**63-1. The message never shows the value.
        """
        lengths = self.content_length
        if lengths is None:
            return None
        if len(lengths) == 1:
            length = lengths[0]
            if length.isdigit() and len(length) < 19:  # the usual case: one plain number
                return int(length)
        if not all(lengths):
            raise httpcore.RemoteProtocolError(
                "Invalid Content-Length header: empty value or empty list element"
            )
        if len(set(lengths)) != 1:
            raise httpcore.RemoteProtocolError("Conflicting Content-Length values")
        # Digits are checked before int(): Python refuses to convert more than 4300 digits
        # with a ValueError, which must not escape as a non-httpx error.
        if not _DIGITS_RE.fullmatch(lengths[0]):
            raise httpcore.RemoteProtocolError(
                "Invalid Content-Length header: not a decimal number of at most 20 digits"
            )
        length_value = int(lengths[0])
        if length_value > _MAX_LENGTH:
            raise httpcore.RemoteProtocolError("Invalid Content-Length header: above 2**63-1")
        return length_value

    def is_chunked(self) -> bool:
        """True for ``Transfer-Encoding: chunked``, False without the header.

        Raises:
            httpcore.RemoteProtocolError: any other transfer coding (the value is not shown).
        """
        encodings = self.transfer_encoding
        if encodings is None:
            return False
        if encodings != [b"chunked"]:
            raise httpcore.RemoteProtocolError(
                "Unsupported Transfer-Encoding: only chunked is supported"
                if encodings
                else "Empty Transfer-Encoding header"
            )
        return True


_NO_FRAMING = _Framing(False, None, None, False)


class _Upgraded(httpcore.AsyncNetworkStream):
    """A stream taken over by an upgrade or a tunnel; bytes already read come first."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, leftover: bytes) -> None:
        self._stream = stream
        self._leftover = leftover

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._leftover:
            data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
            return data
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._leftover:
            raise httpcore.ProxyError(
                "the proxy sent data after its CONNECT response, before the TLS handshake"
            )
        return await self._stream.start_tls(ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class HTTP11Connection:
    """An HTTP/1.1 connection on an open network stream, used by one request at a time.

    Args:
        origin: Where the stream goes (the proxy's origin for absolute-form requests).
        stream: The connected (TCP, TLS, tunnelled) network stream; this object owns it.
        keepalive_expiry: Seconds an idle connection stays usable, or None for no limit.
    """

    __slots__ = (
        "_buffer",
        "_expire_at",
        "_is_readable",
        "_keepalive_expiry",
        "_last_headers",
        "_origin",
        "_responded",
        "_state",
        "_stream",
    )

    def __init__(
        self,
        origin: httpcore.Origin,
        stream: httpcore.AsyncNetworkStream,
        keepalive_expiry: float | None = None,
    ) -> None:
        self._origin = origin
        self._stream = stream
        self._keepalive_expiry = keepalive_expiry
        self._state = _IDLE
        self._expire_at: float | None = None
        self._buffer = b""
        # Whether any byte of the current request's response has arrived: a request that
        # failed before one did may be sent again on another connection (see answered()).
        self._responded = False
        self._last_headers: tuple[Headers, bytes, bool, int | bool | None] | None = None
        # Streams that can say directly whether the server has written (AsyncioStream) are
        # asked so; others through get_extra_info, as httpcore does.
        readable = getattr(stream, "is_readable", None)
        self._is_readable: typing.Callable[[], Any] = (
            readable
            if callable(readable)
            else functools.partial(stream.get_extra_info, "is_readable")
        )

    def __repr__(self) -> str:
        o = self._origin
        return (
            f"<HTTP11Connection [{o.scheme.decode()}://{o.host.decode()}:{o.port}, {self._state}]>"
        )

    # What the pool asks.

    def is_idle(self) -> bool:
        return self._state is _IDLE

    def is_closed(self) -> bool:
        return self._state is _CLOSED

    def has_expired(self) -> bool:
        """True when it must not take another request: expired, or closed by the server."""
        if self._state is _CLOSED or self._state is _BROKEN:
            return True
        if self._expire_at is not None and _clock() > self._expire_at:
            return True
        # An idle connection the server has written to (a close, or garbage) is finished.
        if self._state is not _IDLE:
            return False
        return bool(self._is_readable())

    def answered(self) -> bool:
        """Whether any byte of the last request's response arrived.

        False after a failed request means that no answer began: the server closed or reset
        the connection first (typically a keep-alive connection it had just timed out). The
        transport then sends an idempotent request once more, on a new connection.
        """
        return self._responded

    async def aclose(self) -> None:
        self._state = _CLOSED
        await self._stream.aclose()

    # Sending.

    async def send(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: typing.Iterable[bytes] | typing.AsyncIterable[bytes],
        extensions: typing.Mapping[str, Any],
    ) -> ResponseHead:
        """Write one request and read its response head; the body streams from the result.

        Raises:
            httpcore.LocalProtocolError: the request cannot be written as valid HTTP/1.1.
            httpcore.RemoteProtocolError: the server's answer is not valid HTTP/1.1.
            httpcore.ReadError, WriteError, ReadTimeout, WriteTimeout: from the network.
        """
        if self._state is not _IDLE:
            raise httpcore.ConnectionNotAvailable()
        self._state = _ACTIVE
        self._expire_at = None
        self._responded = False
        timeouts = extensions.get("timeout") or {}
        trace = extensions.get("trace")
        if trace is not None or logger.isEnabledFor(logging.DEBUG):
            return await self._send_traced(method, target, headers, body, timeouts, trace)
        try:
            head, close, framing = self._prepare(method, target, headers)
            write_timeout = timeouts.get("write")
            try:
                # Inline rather than a coroutine of its own: one await layer less per request.
                whole = _with_body(head, framing, body)
                if whole is not None:
                    await self._stream.write(whole, write_timeout)
                else:
                    await self._stream.write(head, write_timeout)
                    await self._write_body(framing, body, write_timeout)
            except httpcore.WriteError:
                # A server may answer before it has read the body (401, 413) and close:
                # read that answer; if there is none, the read fails and says so.
                close = True
            return await self._read_response(method, headers, close, timeouts.get("read"))
        except BaseException:
            # Mid-request: unusable. The pool closes it (shielded) when it gets it back.
            self._state = _BROKEN
            raise

    async def _send_traced(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: typing.Iterable[bytes] | typing.AsyncIterable[bytes],
        timeouts: typing.Mapping[str, Any],
        trace: Any,
    ) -> ResponseHead:
        origin = self._origin
        # httpcore's trace callbacks get its Request; built here only, off the fast path.
        request = httpcore.Request(
            method,
            httpcore.URL(scheme=origin.scheme, host=origin.host, port=origin.port, target=target),
            headers=headers,
        )
        info = {"request": request}
        try:
            try:
                async with _Event("send_request_headers", trace, info):
                    head, close, framing = self._prepare(method, target, headers)
                    await self._stream.write(head, timeouts.get("write"))
                async with _Event("send_request_body", trace, info):
                    await self._write_body(framing, body, timeouts.get("write"))
            except httpcore.WriteError:
                close = True  # as in send(): read the early answer if there is one
            event = _Event("receive_response_headers", trace, info)
            async with event:
                response = await self._read_response(method, headers, close, timeouts.get("read"))
                event.result = (
                    response.http_version,
                    response.status,
                    response.reason,
                    response.headers,
                )
        except BaseException:
            # Mid-request: unusable. The pool closes it (shielded) when it gets it back.
            self._state = _BROKEN
            raise
        return response._replace(stream=_TracedBody(response.stream, trace, info))

    def _prepare(self, method: bytes, target: bytes, headers: Headers) -> tuple[bytes, bool, Any]:
        """The request head as bytes, whether it asks to close, and its body framing."""
        if not _TOKEN_RE.fullmatch(method):
            raise httpcore.LocalProtocolError(f"Illegal request method {method!r}")
        if not _TARGET_RE.fullmatch(target):
            raise httpcore.LocalProtocolError(f"Illegal request target {target!r}")
        # A client sends the same headers request after request: the header block checked
        # and joined for the previous request on this connection is reused when they match.
        last = self._last_headers
        if last is not None and last[0] == headers:
            _, block, close, framing = last
        else:
            block, close, framing, cacheable = _header_block(headers)
            self._last_headers = (headers, block, close, framing) if cacheable else None
        return b"%b %b HTTP/1.1\r\n%b" % (method, target, block), close, framing

    async def _write_body(
        self,
        framing: int | bool | None,
        body: typing.Iterable[bytes] | typing.AsyncIterable[bytes],
        timeout: float | None,
    ) -> None:
        write = self._stream.write
        expected = 0 if framing is None or framing is True else framing
        sent = 0

        async def emit(chunk: bytes) -> None:
            nonlocal sent
            if framing is True:
                if chunk:
                    await write(b"%x\r\n%b\r\n" % (len(chunk), chunk), timeout)
            else:
                sent += len(chunk)
                if sent > expected:
                    raise _length_mismatch(expected, sent)
                if chunk:
                    await write(chunk, timeout)
            # Let the loop run between parts (cancellation, other requests): a body source
            # that never awaits would otherwise hold it for the whole upload.
            await _checkpoint()

        if isinstance(body, AsyncIterable):
            iterator = body.__aiter__()
            try:
                async for chunk in iterator:
                    await emit(chunk)
            except BaseException:
                # An async generator made by __aiter__ (httpx's around a body) is ours alone:
                # close it now rather than leave it to the loop's finalizer. (A user's own
                # generator inside it is the user's to close, as with httpx.)
                if inspect.isasyncgen(iterator):
                    with async_shield():
                        try:
                            await iterator.aclose()
                        except Exception as exc:  # never hide the error that got us here
                            logger.debug("error closing a request body: %r", exc)
                raise
        else:
            for chunk in body:
                await emit(chunk)
        if framing is True:
            await write(b"0\r\n\r\n", timeout)
        elif sent != expected:
            raise _length_mismatch(expected, sent)

    # Receiving.

    async def _read_response(
        self, method: bytes, request_headers: Headers, close: bool, timeout: float | None
    ) -> ResponseHead:
        informational = informational_bytes = 0
        while True:
            status, reason, version, headers, header_list, framing, size = await self._read_head(
                timeout
            )
            if status < 100:
                raise httpcore.RemoteProtocolError(f"Invalid status code {status:03d}")
            if status >= 200 or status == 101:
                break
            # 1xx (100 Continue, 103 Early Hints): informational, the real answer follows.
            # Their framing headers mean nothing, but must still be valid (as h11 checks).
            framing.body_length()
            framing.is_chunked()
            # Bounded in count and bytes: each head is bounded by MAX_HEAD_SIZE, but a
            # server sending them without end would otherwise be read for ever.
            informational += 1
            informational_bytes += size
            if informational > MAX_INFORMATIONAL:
                raise httpcore.RemoteProtocolError(
                    f"Server sent more than {MAX_INFORMATIONAL} informational (1xx) responses "
                    "without a final response (limit MAX_INFORMATIONAL)"
                )
            if informational_bytes > MAX_HEAD_SIZE:
                raise httpcore.RemoteProtocolError(
                    f"Informational (1xx) responses larger than {MAX_HEAD_SIZE} bytes in total "
                    "without a final response (limit MAX_HEAD_SIZE)"
                )
        # Checked for every response, also those whose body they do not frame (as h11 does).
        length = framing.body_length()
        chunked = framing.is_chunked()
        stream = self._stream
        if (status == 101 and _comma_values(request_headers, b"upgrade")) or (
            method == b"CONNECT" and 200 <= status < 300
        ):
            # The connection leaves HTTP: the caller gets the stream; closing the response
            # closes it (as httpcore does), and it never carries another request.
            self._state = _BROKEN
            leftover, self._buffer = self._buffer, b""
            upgraded = _Upgraded(stream, leftover)
            return ResponseHead(status, reason, b"HTTP/" + version, headers, _Once(b""), upgraded)
        if status == 101:
            raise httpcore.RemoteProtocolError(
                "Server sent 101 Switching Protocols to a request without Upgrade"
            )

        # HTTP/1.2 and up are read as 1.1 (RFC 9110 2.5), as h11 does: only 1.0 closes.
        keep_alive = not close and version != b"1.0" and not framing.close
        body: typing.AsyncIterable[bytes]
        if method == b"HEAD" or status in _NO_BODY_STATUS:
            self._done(keep_alive)
            body = _Once(b"")
        elif chunked:
            # Both Transfer-Encoding and Content-Length: chunked wins (RFC 9112 6.3), but the
            # message may be a request-smuggling attempt: the connection is not reused.
            body = self._chunked(keep_alive and length is None, timeout)
        elif length is not None:
            if len(self._buffer) >= length:  # all here already: no reads to come
                data, self._buffer = self._buffer[:length], self._buffer[length:]
                self._done(keep_alive)
                body = _Once(data)
            else:
                body = self._fixed(length, keep_alive, timeout)
        else:
            body = self._until_close(timeout)
        return ResponseHead(
            status,
            reason,
            b"HTTP/" + version,
            headers,
            body,
            stream,
            framing.set_cookie,
            header_list,
        )

    async def _read_head(
        self, timeout: float | None
    ) -> tuple[int, bytes, bytes, Headers, HeaderList, _Framing, int]:
        """Status, reason, version, headers (as pairs and as httpx keeps them), what they
        say about the framing, and how many bytes the head took."""
        buffer = self._buffer
        match = _HEAD_END_RE.search(buffer)
        while match is None:
            if len(buffer) > MAX_HEAD_SIZE:
                raise httpcore.RemoteProtocolError(
                    f"Response head larger than {MAX_HEAD_SIZE} bytes"
                )
            data = await self._stream.read(_READ_SIZE, timeout)
            if not data:
                if buffer.strip():
                    raise httpcore.RemoteProtocolError(
                        "Server disconnected in the middle of the response head"
                    )
                raise httpcore.RemoteProtocolError(
                    "Server disconnected without sending a response."
                )
            # Look again only from where a new line could have ended.
            start = max(len(buffer) - 2, 0)
            buffer += data
            self._responded = True
            match = _HEAD_END_RE.search(buffer, start)
        end = match.end()
        if end > MAX_HEAD_SIZE + 4:
            raise httpcore.RemoteProtocolError(f"Response head larger than {MAX_HEAD_SIZE} bytes")
        raw, self._buffer = buffer[: match.start()], buffer[end:]
        first_end = raw.find(b"\n")
        status_line = raw if first_end < 0 else raw[:first_end]
        if status_line[-1:] == b"\r":  # one CR before the LF, no more: a bare CR is refused
            status_line = status_line[:-1]
        known = _STATUS_LINES.get(status_line)
        if known is None:
            known = _parse_status_line(status_line)
        status, reason, version = known
        if first_end < 0:
            return status, reason, version, [], [], _NO_FRAMING, end
        block = raw[first_end + 1 :]
        if block[-1:] == b"\r":  # the CR of the last line's CRLF
            block = block[:-1]
        parsed = _parse_header_lines(block)
        if parsed is None:
            # Some line is folded, ends in a bare LF, or is invalid: the line-by-line parse
            # handles it or says what is wrong.
            headers = _parse_fields(raw[first_end + 1 :], "response head")
            header_list = [(key, key.lower(), value) for key, value in headers]
            return status, reason, version, headers, header_list, _Framing.of(headers), end
        return status, reason, version, *parsed, end

    async def _fill(self, timeout: float | None) -> bool:
        data = await self._stream.read(_READ_SIZE, timeout)
        if data:
            self._buffer += data
            return True
        return False

    async def _fixed(
        self, length: int, keep_alive: bool, timeout: float | None
    ) -> AsyncIterator[bytes]:
        # Only for a body not yet all in the buffer: length > 0, at least one read to come.
        remaining = length
        while remaining:
            if not self._buffer and not await self._fill(timeout):
                raise httpcore.RemoteProtocolError(
                    f"Server disconnected with {remaining} of {length} body bytes unread "
                    "(peer closed connection without sending complete message body)"
                )
            buffer = self._buffer
            if len(buffer) <= remaining:
                self._buffer = b""
                remaining -= len(buffer)
                if not remaining:
                    self._done(keep_alive)
                yield buffer
            else:
                self._buffer = buffer[remaining:]
                chunk = buffer[:remaining]
                remaining = 0
                self._done(keep_alive)
                yield chunk

    async def _chunked(self, keep_alive: bool, timeout: float | None) -> AsyncIterator[bytes]:
        # Parsed at an offset into the received bytes: slicing the rest off after every
        # chunk would copy the buffer once per chunk (quadratic for many small chunks).
        buf, pos = self._buffer, 0
        read = self._stream.read
        truncated = "(peer closed connection without sending complete message body)"

        async def more(where: str) -> None:
            nonlocal buf, pos
            data = await read(_READ_SIZE, timeout)
            if not data:
                raise httpcore.RemoteProtocolError(f"Server disconnected {where} {truncated}")
            buf, pos = buf[pos:] + data, 0

        async def line(limit: int, too_long: str, where: str) -> bytes:
            # The next line, with its CR if any, without its LF; ``limit`` bytes at most,
            # the LF included.
            nonlocal pos
            while (end := buf.find(b"\n", pos)) < 0:
                if len(buf) - pos >= limit:
                    raise httpcore.RemoteProtocolError(too_long)
                await more(where)
            if end - pos >= limit:
                raise httpcore.RemoteProtocolError(too_long)
            text, pos = buf[pos:end], end + 1
            return text

        while True:
            size_line = await line(
                MAX_HEAD_SIZE,
                f"Response chunk size line longer than {MAX_HEAD_SIZE} bytes",
                "while sending the chunk size",
            )
            # RFC 9112 7.1: CRLF ends a chunk-size line; the bare-LF leniency is for the
            # head's lines only.
            if size_line[-1:] != b"\r":
                raise httpcore.RemoteProtocolError(
                    f"Chunk size line {_shown(size_line)} not ended by CRLF (a bare LF)"
                )
            matched = _CHUNK_SIZE_RE.fullmatch(size_line, 0, len(size_line) - 1)
            if matched is None:
                raise httpcore.RemoteProtocolError(
                    f"Invalid chunk size line {_shown(size_line[:-1])}"
                )
            digits = matched[1]
            if len(digits) > 16 or (remaining := int(digits, 16)) > _MAX_LENGTH:
                raise httpcore.RemoteProtocolError(
                    "Chunk size too large (more than 16 hex digits, or above 2**63-1)"
                )
            if remaining == 0:
                break
            while remaining:
                if pos >= len(buf):
                    await more("in the middle of a chunk")
                end = min(pos + remaining, len(buf))
                chunk = buf[pos:end]
                remaining -= end - pos
                pos = end
                yield chunk
            while len(buf) - pos < 2:
                await more("in the middle of a chunk")
            if buf[pos : pos + 2] != b"\r\n":
                raise httpcore.RemoteProtocolError(
                    "Chunk data longer than its declared size, or not followed by CRLF"
                )
            pos += 2
        # Trailers: field lines (a bare LF allowed, as in the head), MAX_HEAD_SIZE bytes in
        # all at most, checked as header lines are, then dropped.
        budget = MAX_HEAD_SIZE
        trailers: list[bytes] = []
        while True:
            trailer = await line(
                budget,
                f"Response trailer section larger than {MAX_HEAD_SIZE} bytes",
                "while sending the trailer section",
            )
            if trailer == b"" or trailer == b"\r":
                break
            budget -= len(trailer) + 1
            trailers.append(trailer)
        if trailers:
            _parse_fields(b"\n".join(trailers), "trailer section")
        self._buffer = buf[pos:]
        self._done(keep_alive)

    async def _until_close(self, timeout: float | None) -> AsyncIterator[bytes]:
        while True:
            if self._buffer:
                chunk, self._buffer = self._buffer, b""
                yield chunk
            if not await self._fill(timeout):
                break
        self._done(keep_alive=False)

    def _done(self, keep_alive: bool) -> None:
        """The response has been read to its end."""
        if self._state is not _ACTIVE:
            return
        if not keep_alive or self._buffer:
            # Bytes after the end of a response were not asked for: the stream is unusable.
            self._state = _BROKEN
            return
        self._state = _IDLE
        if self._keepalive_expiry is not None:
            self._expire_at = _clock() + self._keepalive_expiry


def _parse_status_line(line: bytes) -> tuple[int, bytes, bytes]:
    """Status, reason and version of a status line (without its line end).

    Raises a RemoteProtocolError when it is not ``HTTP/1.x NNN [reason]``.
    """
    matched = _STATUS_LINE_RE.fullmatch(line)
    if matched is None:
        if not line.startswith(b"HTTP/"):
            raise httpcore.RemoteProtocolError(
                f"Invalid status line {_shown(line)}: the server did not answer with HTTP/1.x"
            )
        raise httpcore.RemoteProtocolError(f"Invalid status line {_shown(line)}")
    version, status, reason = matched.groups()
    parsed = int(status), reason or b"", version
    if len(_STATUS_LINES) >= _STATUS_LINES_MAX:
        _STATUS_LINES.clear()
    _STATUS_LINES[line] = parsed
    return parsed


def _with_body(
    head: bytes,
    framing: int | bool | None,
    body: typing.Iterable[bytes] | typing.AsyncIterable[bytes],
) -> bytes | None:
    """The head and the whole body as one write, for a small body held in memory (httpx's
    ByteStream is also a sync iterable): one syscall, and no small segment waiting on a
    delayed ACK. ``None`` for a body to be sent after the head, part by part.

    Raises:
        httpcore.LocalProtocolError: the body's length is not the one its head declares.
    """
    if (framing is None or (framing is not True and framing <= _COALESCE_LIMIT)) and (
        isinstance(body, Iterable) and not isinstance(body, (bytes, str))
    ):
        data = b"".join(body)
        expected = 0 if framing is None else framing
        if len(data) != expected:
            raise _length_mismatch(expected, len(data))
        return head + data
    return None


def _parse_header_lines(block: bytes) -> tuple[Headers, HeaderList, _Framing] | None:
    """The header lines of a response head, each ended by CRLF (the last one's cut off).

    Returns the headers as pairs and as httpx keeps them, and their framing; None when a
    line does not match a plain ``name: value`` line (obsolete folding, a bare LF or CR, an
    invalid line): :func:`_parse_fields` then parses the block or says what is wrong.
    """
    headers: Headers = []
    header_list: HeaderList = []
    framing: list[_FramingPart] | None = None
    get = _LINES.get
    for line in block.split(b"\r\n"):
        known = get(line) or _new_line(line)
        if known is None:
            return None
        headers.append(known[0])
        header_list.append(known[1])
        part = known[2]
        if part is not None:
            if framing is None:
                framing = [part]
            else:
                framing.append(part)
    if framing is None:
        return headers, header_list, _NO_FRAMING
    return headers, header_list, _Framing.combine(framing)


def _new_line(line: bytes) -> _Line | None:
    """A header line not in the cache, parsed (and cached when it may be); None if invalid."""
    field = _HEADER_LINE_RE.fullmatch(line)
    if field is None:
        return None
    name: bytes = field[1]
    value: bytes = field[2]
    lowered = name.lower()
    parsed = (
        (name, value),
        (name, lowered, value),
        _framing_part(lowered, value)
        if lowered in _FRAMING_HEADERS or lowered in _SET_COOKIE_HEADERS
        else None,
    )
    if lowered not in _UNCACHED_LINES and len(line) <= _LINE_MAX_BYTES:
        if len(_LINES) >= _LINES_MAX:
            _LINES.clear()
        _LINES[line] = parsed
    return parsed


def _parse_fields(block: bytes, section: str) -> Headers:
    """The field lines of a header or trailer section, one line by LF (one CR before it).

    Obsolete line folding joins a continuation to its line with one space, as h11 does (RFC
    9112 5.2 lets a recipient replace each obs-fold with SP). Raises a RemoteProtocolError
    naming the section and the field, never showing a value.
    """
    lines: list[bytes] = []
    for line in block.split(b"\n"):
        if line[-1:] == b"\r":
            line = line[:-1]
        if line[:1] in (b" ", b"\t"):  # obsolete line folding
            if not lines:
                raise httpcore.RemoteProtocolError(f"The {section} starts with a folded line")
            lines[-1] += b" " + line.lstrip(b" \t")
        else:
            lines.append(line)
    fields: Headers = []
    for line in lines:
        field = _HEADER_LINE_RE.fullmatch(line)
        if field is None:
            raise _field_error(line, section)
        fields.append((field[1], field[2]))
    return fields


def _shown(line: bytes) -> str:
    """A status or chunk-size line for an error message: truncated, cut at a CR or colon.

    Where a server dropped or mangled the line end (a bare CR, no CRLF at all), the next
    line, a header with perhaps a token in its value, is on the same line: only what comes
    before a CR and before a colon (so at most a header's name) is ever shown.
    """
    cr, colon = line.find(b"\r"), line.find(b":")
    if cr < 0 and colon < 0:
        return repr(line[:100])
    if colon < 0 or 0 <= cr < colon:
        return f"{line[: min(cr, 100)]!r} (shown up to a bare CR)"
    return f"{line[: min(colon, 100)]!r} (shown up to a colon)"


def _field_error(line: bytes, section: str) -> httpcore.RemoteProtocolError:
    # Only a field name (a token, so printable) is ever shown: values may be credentials.
    name, colon, _ = line.partition(b":")
    if not colon:
        problem = "a line without a colon"
    elif not _TOKEN_RE.fullmatch(name):
        problem = "a field name that is not a token (whitespace or a control character?)"
    else:
        shown = name[:100].decode("ascii")
        problem = f"the value of {shown!r} has a control character, a bare CR or a NUL"
    return httpcore.RemoteProtocolError(
        f"Invalid header line in the {section}: {problem} (value not shown)"
    )


def _header_block(headers: Headers) -> tuple[bytes, bool, int | bool | None, bool]:
    """Request header lines (and the blank line) as bytes, after checking them as h11 does.

    Also returns whether they ask to close the connection, the body framing they declare
    (Content-Length, True for chunked, None for none), and whether the block may be kept
    for the next request (not when it carries credentials or cookies).
    """
    parts: list[bytes] = []
    append = parts.append
    host = close = False
    cacheable = True
    framing: int | bool | None = None
    for name, value in headers:
        if not _TOKEN_RE.fullmatch(name):
            raise httpcore.LocalProtocolError(f"Illegal header name {name!r}")
        lower = name.lower()
        if not _VALUE_RE.fullmatch(value):
            # The value is never shown: it may be a credential, a cookie, an API key.
            raise httpcore.LocalProtocolError(
                f"Illegal header value for {name.decode('ascii')[:100]!r} (control "
                "characters or surrounding whitespace; value not shown)"
            )
        if lower == b"host":
            host = True
        elif lower == b"content-length":
            lengths = {part.strip() for part in value.split(b",")}
            # Digits bounded before int(), which refuses over 4300 digits with ValueError.
            if len(lengths) != 1 or not _DIGITS_RE.fullmatch(length := lengths.pop()):
                raise httpcore.LocalProtocolError(
                    "Illegal Content-Length header: not one decimal number of at most 20 digits"
                )
            if (declared := int(length)) > _MAX_LENGTH:
                raise httpcore.LocalProtocolError("Illegal Content-Length header: above 2**63-1")
            if framing is None:
                framing = declared
            elif framing is not True and framing != declared:
                raise httpcore.LocalProtocolError("Conflicting Content-Length headers")
        elif lower == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                raise httpcore.LocalProtocolError(
                    "Only Transfer-Encoding: chunked is supported in a request"
                )
            framing = True
        elif lower == b"connection":
            if b"close" in value.lower() and b"close" in _split_tokens(value):
                close = True
        elif lower in _UNCACHED_HEADERS:
            cacheable = False
        append(name)
        append(b": ")
        append(value)
        append(b"\r\n")
    if not host:
        raise httpcore.LocalProtocolError("Missing mandatory Host: header")
    append(b"\r\n")
    return b"".join(parts), close, framing, cacheable


def _split_tokens(value: bytes) -> list[bytes]:
    return [part.strip().lower() for part in value.split(b",")]


def _length_mismatch(expected: int, actual: int) -> httpcore.LocalProtocolError:
    return httpcore.LocalProtocolError(
        f"Request body is {actual} bytes long where its Content-Length says {expected}"
        if actual > expected
        else f"Request body ended after {actual} of the {expected} bytes of its Content-Length"
    )


class _Once:
    """A body that is already in memory: one chunk (none when empty)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data or None

    def __aiter__(self) -> _Once:
        return self

    async def __anext__(self) -> bytes:
        data = self._data
        if data is None:
            raise StopAsyncIteration
        self._data = None
        return data

    def take(self) -> bytes:
        """The whole body at once (empty if it was already iterated)."""
        data, self._data = self._data, None
        return data or b""


class _Event:
    """httpcore-style trace events (``http11.<name>.started/complete/failed``) and DEBUG logs."""

    __slots__ = ("info", "name", "result", "trace")

    def __init__(self, name: str, trace: Any, info: dict[str, Any]) -> None:
        self.name = name
        self.trace = trace
        self.info = info
        self.result: Any = None

    async def _emit(self, event: str, info: dict[str, Any]) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s.%s %s", self.name, event, _loggable(info))
        if self.trace is not None:
            await self.trace(f"http11.{self.name}.{event}", info)

    async def __aenter__(self) -> _Event:
        await self._emit("started", self.info)
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            await self._emit("complete", {"return_value": self.result})
        else:
            await self._emit("failed", {"exception": exc})


def _loggable(info: dict[str, Any]) -> str:
    # As httpcore's trace logs, but authentication header values never reach a log.
    parts = []
    for key, value in info.items():
        if key == "return_value" and isinstance(value, tuple) and len(value) == 4:
            value = (*value[:3], _redact(value[3]))
        parts.append(f"{key}={value!r}")
    return " ".join(parts)


class _TracedBody:
    """Wraps a response body with ``receive_response_body`` trace events.

    An iterator object rather than an async generator: a response closed with its body half
    read ends the event there (failed, with GeneratorExit, as httpcore's generator reports
    it once collected) instead of leaving a suspended generator for the garbage collector to
    finish at some later time (trio warns of each such generator).
    """

    __slots__ = ("_body", "_event", "_info", "_iterator", "_trace")

    def __init__(self, body: typing.AsyncIterable[bytes], trace: Any, info: dict[str, Any]) -> None:
        self._body = body
        self._trace = trace
        self._info = info
        self._iterator: AsyncIterator[bytes] | None = None
        self._event: _Event | None = None  # receive_response_body, from its start to its end

    def __aiter__(self) -> _TracedBody:
        return self

    async def __anext__(self) -> bytes:
        iterator = self._iterator
        if iterator is None:
            self._iterator = iterator = self._body.__aiter__()
            event = _Event("receive_response_body", self._trace, self._info)
            await event.__aenter__()  # a trace callback's error goes to the reader as is
            self._event = event
        try:
            return await iterator.__anext__()
        except BaseException as exc:
            await self._end(None if isinstance(exc, StopAsyncIteration) else exc)
            raise

    async def _end(self, exc: BaseException | None) -> None:
        event, self._event = self._event, None
        if event is not None:
            await event.__aexit__(None, exc, None)  # (_Event reads the exception only)

    async def aclose(self) -> None:
        await self._end(GeneratorExit())
        async with _Event("response_closed", self._trace, self._info):
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                await aclose()
