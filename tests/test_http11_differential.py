"""Differential fuzz: our HTTP/1.1 response parser against h11, the parser httpx runs on.

Hypothesis builds response byte strings, valid ones and subtly invalid ones (mutations of
valid ones: CR/LF swapped or doubled, bytes inserted or dropped, bad chunk sizes, duplicated
or conflicting Content-Length, odd whitespace, obsolete line folding, 1xx sequences,
trailers), and feeds the same bytes to

* ``HTTP11Connection`` after it wrote a request, over an in-memory stream that hands them out
  in reads split at points hypothesis picks (the parser reads a socket the same way: any
  split, then the end of the stream), and
* ``h11.Connection(h11.CLIENT)`` after it sent the matching request, with httpcore's
  ``max_incomplete_event_size`` (our ``MAX_HEAD_SIZE``).

Both must give the same status, reason, headers, body and keep-alive decision, or both an
error. The only differences allowed are the ones ``_http11``'s module docstring lists, each
an entry of :data:`DIVERGENCES` below: a predicate on the bytes saying the feature is there,
which side may fail, and what our error must say. Our errors must be
``httpcore.RemoteProtocolError`` (anything else fails the test) and never show the token of
a ``WWW-Authenticate`` header or the value of a ``Set-Cookie`` header.

The default run is 300 examples from a fixed seed (derandomized: the same examples in every
run, a few seconds). For a long run, with fresh random examples each time::

    HTTPX_EXT_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -p no:cacheprovider \\
        tests/test_http11_differential.py --hypothesis-show-statistics

The statistics show how many examples both parsers accepted, both refused, or where an
allowed divergence explained a difference.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import httpcore
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from httpx_extensions._http11 import _CHUNK_SIZE_RE, MAX_HEAD_SIZE, HTTP11Connection

_EXAMPLES = int(os.environ.get("HTTPX_EXT_FUZZ_EXAMPLES", "0") or 0)

TOKEN = b"TlRMTVNTUAACAAAADAAMADgAAAA1goni"  # a challenge token: never in an error
COOKIE = b"session-4f7a9c1e"  # a cookie value: never in an error

# Bytes h11 keeps in a field value and we refuse (RFC 9110 5.5: CTLs are invalid). Bodies
# are generated without them, so they come only from the mutations.
_CTL = bytes([*range(0x01, 0x09), *range(0x0E, 0x20), 0x7F])
_CTL_RE = re.compile(b"[" + re.escape(_CTL) + b"]")


# The two parsers.


@dataclass(frozen=True)
class Ok:
    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    reusable: bool


@dataclass(frozen=True)
class Error:
    message: str


Outcome = Ok | Error


class _SplitStream(httpcore.AsyncNetworkStream):
    """The response bytes in the reads given, then the end of the stream (b"")."""

    def __init__(self, segments: list[bytes]) -> None:
        self._segments = deque(segments)
        self.written: list[bytes] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if not self._segments:
            return b""
        segment = self._segments.popleft()
        if len(segment) > max_bytes:
            self._segments.appendleft(segment[max_bytes:])
            segment = segment[:max_bytes]
        return segment

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written.append(buffer)

    def unread(self) -> bool:
        return bool(self._segments)

    async def aclose(self) -> None:  # pragma: no cover - the pool would call it
        pass

    def get_extra_info(self, info: str) -> Any:
        return False  # is_readable: nothing more has arrived


def _run(coroutine: Any) -> Any:
    # The stream never blocks, so the parser runs to the end without an event loop.
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()  # pragma: no cover - a failure of the harness itself
    raise AssertionError("the parser waited on something other than its stream")


def _normalise(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """Headers as h11 presents them: names lowercased, repeated Content-Length folded into
    its one value, Transfer-Encoding lowercased. (We return headers as the server sent
    them; a representation difference, not a parsing one.)"""
    out: list[tuple[bytes, bytes]] = []
    seen_length = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            if seen_length:
                continue
            seen_length = True
            value = value.split(b",")[0].strip()
        elif lower == b"transfer-encoding":  # h11 lowercases it (and has no empty elements)
            value = b", ".join(p.strip(b" \t") for p in value.lower().split(b",") if p.strip())
        out.append((lower, value))
    return tuple(out)


def ours(raw: bytes, cuts: list[int], method: bytes) -> Outcome:
    segments = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    stream = _SplitStream([s for s in segments if s])
    connection = HTTP11Connection(httpcore.Origin(b"http", b"example.com", 80), stream)

    async def exchange() -> Ok:
        head = await connection.send(method, b"/", [(b"Host", b"example.com")], [], {})
        body = b"".join([part async for part in head.stream])
        # Bytes still unread after the response would make the pool's is_readable check
        # drop the idle connection: reusable only when none are left.
        reusable = connection.is_idle() and not stream.unread()
        return Ok(head.status, head.reason, _normalise(head.headers), body, reusable)

    try:
        result: Ok = _run(exchange())
    except httpcore.RemoteProtocolError as exc:
        return Error(str(exc))
    assert stream.written == [method + b" / HTTP/1.1\r\nHost: example.com\r\n\r\n"]
    return result


def theirs(raw: bytes, method: bytes) -> Outcome:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "example.com")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    response: h11.Response | None = None
    body: list[bytes] = []
    needed_eof = False  # a body that ends with the connection leaves nothing to reuse
    try:
        while True:
            item = conn.next_event()
            if item is h11.NEED_DATA:
                assert not needed_eof
                needed_eof = True
                conn.receive_data(b"")
            elif isinstance(item, h11.Response):
                response = item
            elif isinstance(item, h11.Data):
                body.append(bytes(item.data))
            elif isinstance(item, h11.EndOfMessage):
                break
            elif isinstance(item, h11.ConnectionClosed):  # pragma: no cover - h11 raises
                return Error("closed")
            # InformationalResponse: skipped, as we skip them.
    except h11.RemoteProtocolError as exc:
        return Error(str(exc))
    assert response is not None
    leftover = bool(conn.trailing_data[0])
    reusable = (
        conn.our_state is h11.DONE
        and conn.their_state is h11.DONE
        and not leftover
        and not needed_eof
    )
    headers = tuple((bytes(k), bytes(v)) for k, v in response.headers)
    return Ok(response.status_code, bytes(response.reason), headers, b"".join(body), reusable)


# The documented divergences.

# h11's own chunk-size line (h11/_abnf.py): up to 20 hex digits, anything after ";".
_H11_CHUNK_RE = re.compile(rb"[0-9A-Fa-f]{1,20}(?:;.*)?[ \t]*")
_VERSION_RE = re.compile(rb"(?:^|\n)HTTP/([0-9]\.[0-9]) [0-9]{3}")
_TE_RE = re.compile(rb"(?im)^transfer-encoding:[ \t]*([^\r\n]*)")


def _crlf_lines(raw: bytes) -> list[bytes]:
    # Every line that ends in CRLF, without it (a chunk-size line must).
    return [line[:-1] for line in raw.split(b"\n") if line[-1:] == b"\r"]


def _has_ctl(raw: bytes) -> bool:
    return _CTL_RE.search(raw) is not None


def _strict_chunk_line(raw: bytes) -> bool:
    # A line h11 takes as a chunk-size line that we refuse: an extension outside the RFC
    # grammar (a CR, a CTL, a missing name) or 17 to 20 hex digits.
    for line in _crlf_lines(raw):
        if _H11_CHUNK_RE.fullmatch(line):
            ours_match = _CHUNK_SIZE_RE.fullmatch(line)
            if ours_match is None or len(ours_match[1]) > 16:
                return True
    return False


def _version_not_1x(raw: bytes) -> bool:
    return any(not v.startswith(b"1.") for v in _VERSION_RE.findall(raw))


def _te_empty_element(raw: bytes) -> bool:
    for value in _TE_RE.findall(raw):
        parts = [p.strip(b" \t") for p in value.split(b",")]
        if b"" in parts and [p.lower() for p in parts if p] == [b"chunked"]:
            return True
    return False


def _as_h11_te(raw: bytes) -> bytes:
    # What h11 accepts for the same response: the empty elements dropped.
    return _TE_RE.sub(lambda m: m[0][: m.start(1) - m.start(0)] + b"chunked", raw)


_BWS_RE = re.compile(rb"(?<=\n)([0-9A-Fa-f]+)[ \t]+(;[^\r\n]*\r\n)")


def _bws_before_chunk_ext(raw: bytes) -> bool:
    return any(re.fullmatch(rb"[0-9A-Fa-f]+[ \t]+;.*", line) for line in _crlf_lines(raw))


def _as_h11_bws(raw: bytes) -> bytes:
    # What h11 accepts for the same response: no whitespace before the ";".
    return _BWS_RE.sub(rb"\1\2", raw)


def _length_over_max(raw: bytes) -> bool:
    values = re.findall(rb"(?im)^content-length:[ \t]*([0-9]{1,20})[ \t]*\r?$", raw)
    return any(int(value) > 2**63 - 1 for value in values)


def _te_and_cl(raw: bytes) -> bool:
    lower = raw.lower()
    return b"\ntransfer-encoding:" in lower and b"\ncontent-length:" in lower


@dataclass(frozen=True)
class Divergence:
    """An allowed difference: when ``present(raw)``, the ``side`` may differ as described."""

    name: str
    present: Callable[[bytes], bool]
    #: "ours-refuses": h11 accepts, we refuse with a message matching ``message``;
    #: "ours-accepts": we accept, h11 refuses, and our result is h11's for ``repair(raw)``
    #: (the same response without the feature); "not-reused": same response, no reuse.
    kind: str
    message: str = ""
    repair: Callable[[bytes], bytes] | None = None


DIVERGENCES = [
    # Stricter (RFC 9110 5.5): CTLs in field values and reason phrases.
    Divergence(
        "ctl-in-field",
        _has_ctl,
        "ours-refuses",
        r"Invalid header line|Invalid status line|Invalid chunk size line",
    ),
    # Stricter (RFC 9112 7.1.1): chunk extensions by the grammar, at most 16 hex digits.
    Divergence(
        "strict-chunk-line",
        _strict_chunk_line,
        "ours-refuses",
        r"Invalid chunk size line|Chunk size too large",
    ),
    # Stricter: HTTP/1.x only (h11 takes any HTTP/d.d).
    Divergence("version-not-1.x", _version_not_1x, "ours-refuses", r"Invalid status line"),
    # Stricter: a Content-Length above 2**63-1 (h11 takes 20 digits; seen with HEAD, where
    # no body has to arrive).
    Divergence("content-length-over-2**63-1", _length_over_max, "ours-refuses", r"above 2\*\*63-1"),
    # Lenient (RFC 9110 5.6.1): empty list elements in Transfer-Encoding.
    Divergence("te-empty-element", _te_empty_element, "ours-accepts", repair=_as_h11_te),
    # Lenient (RFC 9112 7.1.1 BWS): whitespace before a chunk extension's ";".
    Divergence("bws-before-chunk-ext", _bws_before_chunk_ext, "ours-accepts", repair=_as_h11_bws),
    # Stricter (RFC 9112 6.3): a response with both framings is not trusted for reuse.
    Divergence("te-and-cl-not-reused", _te_and_cl, "not-reused"),
]


def _agree(mine: Outcome, reference: Outcome, raw: bytes) -> bool:
    """The same result, but for the reuse we refuse after both framings (te-and-cl)."""
    if mine == reference:
        return True
    return (
        isinstance(mine, Ok)
        and isinstance(reference, Ok)
        and _te_and_cl(raw)
        and mine == Ok(**{**reference.__dict__, "reusable": False})
    )


def check(raw: bytes, cuts: list[int], method: bytes = b"GET") -> str:
    """Compare both parsers on ``raw``; returns the category for the statistics."""
    mine = ours(raw, cuts, method)
    reference = theirs(raw, method)
    if isinstance(mine, Error):
        assert TOKEN.decode() not in mine.message, mine.message
        assert COOKIE.decode() not in mine.message, mine.message
    if isinstance(mine, Error) and isinstance(reference, Error):
        return "both refuse"
    if mine == reference:
        return "both accept, same result"
    for divergence in DIVERGENCES:
        if not divergence.present(raw):
            continue
        if divergence.kind == "ours-refuses" and isinstance(reference, Ok):
            if isinstance(mine, Error) and re.search(divergence.message, mine.message):
                return f"allowed: {divergence.name}"
        elif divergence.kind == "ours-accepts" and isinstance(reference, Error):
            # Lenient, and right: what h11 reads once the lenient features are taken out
            # (all of them: two may come together).
            repaired = raw
            for other in DIVERGENCES:
                if other.repair is not None and other.present(repaired):
                    repaired = other.repair(repaired)
            if isinstance(mine, Ok) and _agree(mine, theirs(repaired, method), raw):
                return f"allowed: {divergence.name}"
        elif divergence.kind == "not-reused" and _agree(mine, reference, raw):
            return f"allowed: {divergence.name}"
    raise AssertionError(f"parsers differ on {raw!r}:\n  ours: {mine}\n  h11:  {reference}")


# The responses.

_EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])
_OWS = st.sampled_from([b"", b" ", b" ", b"\t", b"  "])
_FIELDS = st.sampled_from(
    [
        (b"Server", b"fuzz/1.0"),
        (b"X-Empty", b""),
        (b"X-Spaces", b"a  b\tc"),
        (b"X-Obs-Text", b"caf\xc3\xa9 \x80\xff"),
        (b"WWW-Authenticate", b"Negotiate " + TOKEN),
        (b"Set-Cookie", b"id=" + COOKIE + b"; Path=/; HttpOnly"),
        (b"Connection", b"keep-alive"),
        (b"Connection", b"close"),
        (b"vary", b"Accept-Encoding, Cookie"),
    ]
)
_EXTENSIONS = st.sampled_from(
    [b"", b"", b";a", b";a=b", b';n="q \\" v"', b" ;bws", b";a=b;c", b";", b";a=\x01", b"  "]
)
_INSERTS = st.sampled_from(
    [b"\x00", b" ", b"\t", b",", b";", b":", b"0", b"a", b"\n", b"\r", b'"', b"\x01", b"\x7f"]
)
_CRLF_REPLACEMENTS = st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\n\r", b"", b"\r\n\r\n"])
_BAD_LENGTHS = st.sampled_from(
    [b"5,", b",5", b"+5", b"5 6", b"-1", b"0x5", b"1" * 25, b"%d" % 2**63, b"00000000000000000005"]
)
_BAD_SIZES = st.sampled_from(
    [b"-1", b"0x5", b"g", b"5" * 17, b"0" * 19 + b"5", b"FFFFFFFFFFFFFFFF", b"", b" 5"]
)


def _clean(body: bytes) -> bytes:
    return body.translate(None, _CTL)


@st.composite
def _valid_response(draw: st.DrawFn) -> bytes:
    def eol() -> bytes:
        return draw(_EOL)

    raw = b""
    for _ in range(draw(st.integers(0, 3))):
        code = draw(st.sampled_from([b"100 Continue", b"102 Processing", b"103 Early Hints"]))
        raw += b"HTTP/1.1 " + code + eol()
        if draw(st.booleans()):
            raw += b"Link: </a.css>; rel=preload" + eol()
        raw += eol()
    version = draw(
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2"])
        if draw(st.integers(0, 9))
        else st.sampled_from([b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.10", b"HTTP/1"])
    )
    status = draw(
        st.sampled_from(
            [
                *(b"200 OK", b"201 Created", b"204 No Content", b"304 Not Modified"),
                *(b"404 Not Found", b"200", b"200 ", b"599 Odd \x80 reason\t"),
            ]
        )
    )
    raw += version + b" " + status + eol()
    for name, value in draw(st.lists(_FIELDS, max_size=4)):
        raw += name + b":" + draw(_OWS) + value + draw(_OWS) + eol()
        if draw(st.integers(0, 5)) == 0:  # obsolete line folding
            raw += draw(st.sampled_from([b" ", b"\t", b"   "])) + b"folded" + draw(_OWS) + eol()
    body = _clean(draw(st.binary(max_size=64)))
    framing = draw(st.sampled_from(["length", "length", "chunked", "chunked", "close", "both"]))
    if framing in ("length", "both"):
        length = b"%d" % len(body)
        raw += draw(
            st.sampled_from(
                [
                    b"Content-Length: " + length + eol(),
                    b"Content-Length: " + length + b", " + length + eol(),
                    b"Content-Length: " + length + eol() + b"content-length: " + length + eol(),
                ]
            )
        )
    if framing in ("chunked", "both"):
        coding = draw(st.sampled_from([b"chunked", b"Chunked", b"chunked,", b", chunked"]))
        raw += b"Transfer-Encoding: " + coding + eol()
    raw += eol()
    if framing in ("chunked", "both"):
        cuts = sorted(draw(st.sets(st.integers(1, max(len(body) - 1, 1)), max_size=4)))
        start = 0
        for end in [*(c for c in cuts if c < len(body)), len(body)]:
            piece = body[start:end]
            if piece:
                size = draw(st.sampled_from([b"%x", b"%X", b"%04x"])) % len(piece)
                raw += size + draw(_EXTENSIONS) + b"\r\n" + piece + b"\r\n"
            start = end
        raw += b"0" + draw(_EXTENSIONS) + b"\r\n"
        for _ in range(draw(st.integers(0, 2))):
            raw += draw(st.sampled_from([b"X-Trailer: t", b"Expires: 0", b" folded"])) + eol()
        raw += eol()
    else:
        raw += body
    return raw


def _positions(raw: bytes, needle: bytes) -> list[int]:
    return [m.start() for m in re.finditer(re.escape(needle), raw)]


@st.composite
def _response(draw: st.DrawFn) -> bytes:
    """A valid response, or one mutated up to three times."""
    raw = draw(_valid_response())
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["crlf", "insert", "delete", "dup-line", "length", "size"]))
        if kind == "crlf" and (places := _positions(raw, b"\r\n")):
            at = draw(st.sampled_from(places))
            raw = raw[:at] + draw(_CRLF_REPLACEMENTS) + raw[at + 2 :]
        elif kind == "insert":
            at = draw(st.integers(0, len(raw)))
            raw = raw[:at] + draw(_INSERTS) + raw[at:]
        elif kind == "delete" and raw:
            at = draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + raw[at + 1 :]
        elif kind == "dup-line" and (places := _positions(raw, b"\n")):
            start = draw(st.sampled_from([0, *[p + 1 for p in places]]))
            end = raw.find(b"\n", start) + 1 or len(raw)
            raw = raw[:end] + raw[start:end] + raw[end:]
        elif kind == "length" and (match := re.search(rb"(?i)content-length:[ \t]*", raw)):
            stop = match.end() + len(re.match(rb"[0-9, ]*", raw[match.end() :])[0])  # type: ignore[index]
            raw = raw[: match.end()] + draw(_BAD_LENGTHS) + raw[stop:]
        elif kind == "size" and (match := re.search(rb"\r?\n\r?\n([0-9A-Fa-f]+)\r\n", raw)):
            raw = raw[: match.start(1)] + draw(_BAD_SIZES) + raw[match.end(1) :]
    return raw


_SETTINGS = settings(
    max_examples=_EXAMPLES or 300,
    derandomize=not _EXAMPLES,  # the default run: the same examples every time
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@_SETTINGS
@given(raw=_response(), data=st.data())
def test_http11_differential_against_h11(raw: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(1, max(len(raw) - 1, 1)), max_size=8)))
    method = data.draw(st.sampled_from([b"GET", b"GET", b"GET", b"HEAD"]))
    category = check(raw, [c for c in cuts if c < len(raw)], method)
    # The same bytes one at a time: every split at once must not change the answer.
    assert check(raw, list(range(1, len(raw))), method) == category
    event(category)
