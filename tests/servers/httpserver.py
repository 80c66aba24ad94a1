"""A real HTTP/1.1 server on loopback for the pool tests.

Why a real server and not a mock transport: the library under test owns its own
connection pool, so the behaviour that matters (which TCP connection a request goes
out on, keep-alive, stale connections, connection-bound auth such as NTLM) only
shows up on real sockets.

The server runs its own asyncio event loop in a daemon thread.  Tests may drive
the client under asyncio *or* trio: the client's event loop never shares anything
with the server's, and the sync API (``start``/``stop``/counters) works from plain
pytest fixtures.

HTTP parsing is done with h11 so that framing (Content-Length, chunked, HEAD,
204/304, ``Connection: close``) follows the RFC without hand-written parsers.

The machinery (the server thread, h11 streams, the keep-alive request loop) is shared with
the IIS-like server in ``httpx_extensions.testing`` and lives there; it is re-exported here
for the proxy and SOCKS servers.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import h11

from httpx_extensions.testing._loopback import (
    READ_SIZE,
    Exchange,
    H11Stream,
    KeepAliveServer,
    ThreadedLoopbackBase,
    close_writer,
    decode_header_value,
    reason_phrase,
)

__all__ = [
    "H11Stream",
    "LoopbackServer",
    "RequestRecord",
    "ThreadedLoopbackBase",
    "close_writer",
    "decode_header_value",
    "reason_phrase",
]

# Status codes whose responses never have a body, whatever the headers say.
_NO_BODY_STATUS = frozenset({204, 304})


@dataclass(frozen=True)
class RequestRecord:
    """One completed request, as the server saw it.

    ``conn_seq`` is the server's serial number of the TCP connection (1, 2, 3...),
    the thing pinning tests assert on.  ``started``/``finished`` are
    ``time.monotonic()`` when the request head arrived and when the last byte of the
    response was written.  ``status`` and ``user`` (the user the request was served
    as by ``/auth``) are extras for more readable assertions.
    """

    conn_seq: int
    method: str
    path: str
    authorization: str | None
    started: float
    finished: float
    status: int = 0
    user: str | None = None


@dataclass
class _AuthState:
    """Connection-bound auth state: none, challenged(nonce) or authenticated(user)."""

    nonce: str | None = None
    pending_user: str | None = None
    user: str | None = None

    def reset(self) -> None:
        self.nonce = self.pending_user = self.user = None


class _Exchange(Exchange["LoopbackServer", _AuthState]):
    """One request/response on a connection: routing and the route handlers."""

    user: str | None = None

    def _q(self, name: str, default: str) -> str:
        values = self.query.get(name)
        return values[0] if values else default

    async def respond(self) -> bool:
        """Route the request; False means "close the connection now"."""
        path = self.path
        try:
            if path == "/":
                await self.reply(200, b"Hello, world!", content_type=b"text/plain")
            elif path == "/echo":
                await self.echo()
            elif path.startswith("/status/"):
                await self.reply(int(path[len("/status/") :]))
            elif path == "/redirect":
                location = self._q("to", "/").encode("latin-1")
                await self.reply(int(self._q("status", "302")), headers=[(b"Location", location)])
            elif path == "/slow":
                await asyncio.sleep(float(self._q("delay", "0.5")))
                await self.reply(200, b"slow", content_type=b"text/plain")
            elif path == "/stream":
                await self.stream_chunks(
                    int(self._q("chunks", "10")),
                    int(self._q("size", "1024")),
                    float(self._q("delay", "0")),
                )
            elif path == "/close":
                await self.reply(200, b"closing", content_type=b"text/plain", close=True)
                return False
            elif path == "/drop":
                return False
            elif path == "/hang":
                # Never answer; hold the connection until the client leaves or stop().
                while await self.stream.reader.read(READ_SIZE):
                    pass
                return False
            elif path == "/auth":
                await self.handle_auth()
            else:
                await self.reply(404, b"Not Found", content_type=b"text/plain")
        except ValueError:
            if self.stream.conn.our_state is not h11.SEND_RESPONSE:
                raise
            await self.reply(400, b"Bad Request", content_type=b"text/plain")
        return True

    async def reply(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: bytes | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
        close: bool = False,
    ) -> None:
        if not 200 <= status <= 599:
            raise ValueError(f"status {status} cannot be a final response")
        response_headers = [(b"X-Conn-Seq", str(self.seq).encode()), *headers]
        if status in _NO_BODY_STATUS:
            body = b""
        else:
            if content_type is not None:
                response_headers.append((b"Content-Type", content_type))
            response_headers.append((b"Content-Length", str(len(body)).encode()))
        if close:
            response_headers.append((b"Connection", b"close"))
        events: list[Any] = [
            h11.Response(status_code=status, headers=response_headers, reason=reason_phrase(status))
        ]
        if body and self.method != "HEAD":
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        await self.stream.send(*events, before_write=lambda: self.finish(status))

    def finish(self, status: int) -> None:
        """Log the request; called right before the response's last bytes are written."""
        self.server._record(
            RequestRecord(
                conn_seq=self.seq,
                method=self.method,
                path=self.target,
                authorization=self.authorization,
                started=self.started,
                finished=time.monotonic(),
                status=status,
                user=self.user,
            )
        )

    async def echo(self) -> None:
        payload = {
            "method": self.method,
            "path": self.target,
            # Original-case names in received order; latin-1 keeps the exact bytes.
            "headers": [
                [bytes(name).decode("latin-1"), bytes(value).decode("latin-1")]
                for name, value in self.request.headers.raw_items()
            ],
            "body": self.body.decode("latin-1"),
        }
        await self.reply(200, json.dumps(payload).encode(), content_type=b"application/json")

    async def stream_chunks(self, chunks: int, size: int, delay: float) -> None:
        if chunks < 0 or size < 0 or delay < 0:
            raise ValueError("negative stream parameter")
        stream = self.stream
        await stream.send(
            h11.Response(
                status_code=200,
                reason=b"OK",
                headers=[
                    (b"X-Conn-Seq", str(self.seq).encode()),
                    (b"Content-Type", b"text/plain"),
                    (b"Transfer-Encoding", b"chunked"),
                ],
            )
        )
        if self.method != "HEAD":
            chunk = b"x" * size
            for index in range(chunks):
                if index:
                    # Always yield: over TLS a vanished client is only noticed once the
                    # loop runs connection_lost, and until then writes just log warnings.
                    await asyncio.sleep(delay)
                await stream.send(h11.Data(data=chunk))
        await stream.send(h11.EndOfMessage(), before_write=lambda: self.finish(200))

    # -- connection-bound auth -----------------------------------------------------

    async def handle_auth(self) -> None:
        """The NTLM-like two-leg handshake whose result belongs to the TCP connection."""
        state = self.auth
        header = self.authorization
        if header is None:
            if state.user is not None:
                self.user = state.user
                await self.auth_ok(handshake=False)
            else:
                # Anonymous request, or one that interrupted a pending handshake.
                await self.auth_fail()
            return
        parsed = _parse_nonce_authorization(header)
        if parsed is None:
            await self.auth_fail()
            return
        token, user = parsed
        if token == "init":
            # Leg 1 (NTLM type 1 -> type 2): issue a nonce bound to this connection.
            # Restarts any previous state, including an authenticated connection.
            state.reset()
            state.nonce = secrets.token_hex(16)
            state.pending_user = user
            self.server._set_user(self.seq, None)
            await self.reply(
                401,
                b"",
                headers=[(b"WWW-Authenticate", f"Nonce {state.nonce}".encode("ascii"))],
            )
            return
        if state.nonce is not None and token == state.nonce and user == state.pending_user:
            # Leg 2 (NTLM type 3) with the nonce issued on this very connection.
            state.reset()
            if not self.server.auth_per_request:
                state.user = user
                self.server._set_user(self.seq, user)
            self.user = user
            await self.auth_ok(handshake=True)
            return
        # Foreign, stale or replayed nonce, or a leg 2 without a leg 1 on this socket.
        await self.auth_fail()

    async def auth_ok(self, *, handshake: bool) -> None:
        body = json.dumps({"user": self.user, "conn": self.seq, "handshake": handshake})
        await self.reply(200, body.encode(), content_type=b"application/json")

    async def auth_fail(self) -> None:
        self.auth.reset()
        self.server._set_user(self.seq, None)
        await self.reply(401, b"", headers=[(b"WWW-Authenticate", b"Nonce")])


def _parse_nonce_authorization(value: str) -> tuple[str, str] | None:
    """Split ``Nonce <token> user=<name>`` into (token, name); None if malformed."""
    parts = value.split(" ", 2)
    if len(parts) != 3 or parts[0].lower() != "nonce" or not parts[1]:
        return None
    if not parts[2].startswith("user=") or len(parts[2]) == len("user="):
        return None
    return parts[1], parts[2][len("user=") :]


class LoopbackServer(KeepAliveServer[RequestRecord, _AuthState]):
    """HTTP/1.1 keep-alive test server on 127.0.0.1; see tests/servers/README.md.

    Use as ``with LoopbackServer() as srv:`` or ``start()``/``stop()``.
    """

    _thread_name = "loopback-http"
    _state_type = _AuthState
    _exchange_type = _Exchange

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float | None = None,
        host: str = "127.0.0.1",
        auth_per_request: bool = False,
    ) -> None:
        super().__init__(
            host=host,
            ssl_context=ssl_context,
            idle_timeout=idle_timeout,
            auth_per_request=auth_per_request,
        )
