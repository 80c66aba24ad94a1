"""The sync parser's request-body paths that its generated twins do not take: a body longer
than the coalescing limit that ends short of its Content-Length, a body iterator (not a
generator) that fails part-way, and, with a trace callback, a server that answers early and
stops reading. In-memory streams (tests/sync/test_http11_hardening.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpcore
import pytest

from httpx_extensions._sync._http11 import _COALESCE_LIMIT

from .sync.test_http11_hardening import HOST, _connection, _Stream

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_sync_cov_http11_streamed_body_shorter_than_its_length_is_refused() -> None:
    stream = _Stream(OK)
    conn = _connection(stream)
    length = str(_COALESCE_LIMIT + 1).encode()  # streamed, not joined and checked first
    with pytest.raises(httpcore.LocalProtocolError, match="ended after 10 of the 65537 bytes"):
        conn.send(b"POST", b"/", [HOST, (b"Content-Length", length)], [b"x" * 10], {})
    assert not conn.is_idle()  # half a request went out: never reused


class _Failing:
    """A body iterator (not a generator) that fails after its first part."""

    def __init__(self) -> None:
        self.parts = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        self.parts += 1
        if self.parts > 1:
            raise ValueError("the body source broke")
        return b"x" * 10


def test_sync_cov_http11_body_iterator_that_fails_breaks_the_connection() -> None:
    stream = _Stream(OK)
    conn = _connection(stream)
    body = _Failing()
    length = str(_COALESCE_LIMIT + 1).encode()
    with pytest.raises(ValueError, match="the body source broke"):
        conn.send(b"POST", b"/", [HOST, (b"Content-Length", length)], body, {})
    assert body.parts == 2
    assert not conn.is_idle()


class _EarlyAnswer(_Stream):
    """The server answers as soon as the head arrives, then stops reading: the body's
    write fails."""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self.written:
            raise httpcore.WriteError("connection reset by peer")
        super().write(buffer, timeout)


def test_sync_cov_http11_traced_request_reads_the_early_answer_after_a_write_error() -> None:
    early = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n"
    stream = _EarlyAnswer(early)
    conn = _connection(stream)
    events: list[str] = []

    def trace(name: str, info: dict[str, Any]) -> None:
        events.append(name)

    length = str(_COALESCE_LIMIT + 1).encode()
    head = conn.send(
        b"POST",
        b"/",
        [HOST, (b"Content-Length", length)],
        [b"x" * (_COALESCE_LIMIT + 1)],
        {"trace": trace},
    )
    assert head.status == 413  # the answer, not the write error
    assert b"".join(head.stream) == b""
    assert "http11.receive_response_headers.complete" in events
    assert not conn.is_idle()  # the rest of the body never went: closed after this answer
