"""A loopback HTTP proxy (forwarding and CONNECT) for the pool tests.

Why: the client must pin connections through a proxy too.  For plain http the
proxy keeps one upstream connection per client connection and target origin, so
that a client keeping its proxy connection also keeps its upstream connection and
connection-bound auth (NTLM-like ``/auth`` on :class:`LoopbackServer`) survives the
hop.  For https the client tunnels with CONNECT and the proxy only pipes bytes.

Upstream failures are mirrored rather than translated into 502s: if the upstream
drops the connection without answering, the proxy drops the client connection;
if the upstream says ``Connection: close`` the proxy says it too and closes.  That
keeps tests behaving the same with and without the proxy.

Only loopback targets (127.0.0.1, localhost, ::1) are allowed; anything else gets
403 without any name resolution or connection attempt.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any
from urllib.parse import urlsplit

import h11

from httpx_extensions.testing._proxy import (
    _HOP_BY_HOP,
    _LOOPBACK_HOSTS,
    _idle_upstream,
    _pipe_both_ways,
)
from httpx_extensions.testing._proxy import _feed_until_eof as _read_until_eof

from .httpserver import H11Stream, ThreadedLoopbackBase, close_writer, reason_phrase

__all__ = ["LoopbackProxy"]


def _filter_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers, including those named in ``Connection``."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(token.strip().lower() for token in bytes(value).split(b","))
    return [
        (bytes(raw_name), bytes(value))
        for raw_name, value in headers.raw_items()
        if bytes(raw_name).lower() not in _HOP_BY_HOP and bytes(raw_name).lower() not in named
    ]


def _has_token(headers: Any, name: bytes, token: bytes) -> bool:
    for key, value in headers:
        if key == name and token in (t.strip().lower() for t in bytes(value).split(b",")):
            return True
    return False


def _get(headers: Any, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None


def _split_authority(authority: str) -> tuple[str, int] | None:
    """``host:port`` / ``[::1]:port`` -> (host, port); None if malformed."""
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.lower(), int(port)


class LoopbackProxy(ThreadedLoopbackBase):
    """HTTP proxy on 127.0.0.1 forwarding only to loopback; see tests/servers/README.md."""

    _thread_name = "loopback-proxy"

    def __init__(self, *, auth: tuple[str, str] | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(host=host, ssl_context=None)
        self.auth = auth
        self._expected_auth: bytes | None = None
        if auth is not None:
            self._expected_auth = base64.b64encode(f"{auth[0]}:{auth[1]}".encode())
        self._connect_requests: list[str] = []
        self._forwarded_requests: list[str] = []
        self._upstream_connections_opened = 0

    # -- counters ------------------------------------------------------------------

    @property
    def connect_requests(self) -> list[str]:
        """``host:port`` of each authorized CONNECT request, in arrival order."""
        with self._lock:
            return list(self._connect_requests)

    @property
    def forwarded_requests(self) -> list[str]:
        """Absolute URL of each authorized forward-proxy request, in arrival order."""
        with self._lock:
            return list(self._forwarded_requests)

    @property
    def upstream_connections_opened(self) -> int:
        """TCP connections the proxy opened to targets (forwarding and tunnels)."""
        with self._lock:
            return self._upstream_connections_opened

    def reset(self) -> None:
        with self._lock:
            self._reset_connection_counters()
            self._connect_requests.clear()
            self._forwarded_requests.clear()
            self._upstream_connections_opened = 0

    # -- connection handling -------------------------------------------------------

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seq: int
    ) -> None:
        client = H11Stream(reader, writer, h11.Connection(h11.SERVER))
        # One upstream connection per target origin, private to this client connection.
        upstreams: dict[tuple[str, int], H11Stream] = {}
        try:
            while True:
                event = await client.next_event()
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):  # pragma: no cover - h11 guarantees
                    return
                body = await client.read_body()
                if not self._authorized(event):
                    await self._reply(
                        client,
                        407,
                        [(b"Proxy-Authenticate", b'Basic realm="test"')],
                    )
                elif event.method == b"CONNECT":
                    if await self._tunnel(client, event):
                        return
                elif not await self._forward(client, event, body, upstreams):
                    return
                conn = client.conn
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        finally:
            for upstream in upstreams.values():
                await close_writer(upstream.writer, abort=self._stopping)

    def _authorized(self, request: h11.Request) -> bool:
        if self._expected_auth is None:
            return True
        value = _get(request.headers, b"proxy-authorization")
        if value is None:
            return False
        scheme, _, credentials = value.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return base64.b64encode(decoded) == self._expected_auth

    async def _reply(
        self,
        client: H11Stream,
        status: int,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
    ) -> None:
        response_headers = [*(headers or []), (b"Content-Length", str(len(body)).encode())]
        events: list[Any] = [
            h11.Response(status_code=status, headers=response_headers, reason=reason_phrase(status))
        ]
        if body:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        await client.send(*events)

    # -- CONNECT -------------------------------------------------------------------

    async def _tunnel(self, client: H11Stream, request: h11.Request) -> bool:
        """Handle CONNECT; True when a tunnel ran (the connection is then finished)."""
        authority = request.target.decode("latin-1")
        with self._lock:
            self._connect_requests.append(authority)
        target = _split_authority(authority)
        if target is None:
            await self._reply(client, 400)
            return False
        host, port = target
        if host not in _LOOPBACK_HOSTS:
            await self._reply(client, 403, body=b"only loopback targets are allowed")
            return False
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            await self._reply(client, 502)
            return False
        with self._lock:
            self._upstream_connections_opened += 1
        try:
            await client.send(
                h11.Response(status_code=200, headers=[], reason=b"Connection established")
            )
            # Bytes the client sent right after the CONNECT head (e.g. a TLS hello)
            # are already in h11's buffer.
            early = client.conn.trailing_data[0]
            if early:
                up_writer.write(early)
            await _pipe_both_ways(client.reader, client.writer, up_reader, up_writer)
        finally:
            await close_writer(up_writer, abort=self._stopping)
        return True

    # -- forwarding ----------------------------------------------------------------

    async def _forward(
        self,
        client: H11Stream,
        request: h11.Request,
        body: bytes,
        upstreams: dict[tuple[str, int], H11Stream],
    ) -> bool:
        """Forward one absolute-form request; False means close the client connection."""
        url = request.target.decode("latin-1")
        parts = urlsplit(url)
        try:
            port = parts.port or 80
        except ValueError:
            port = -1
        if parts.scheme != "http" or not parts.hostname or port < 0:
            await self._reply(client, 400, body=b"absolute-form http:// target required")
            return True
        host = parts.hostname.lower()
        if host not in _LOOPBACK_HOSTS:
            await self._reply(client, 403, body=b"only loopback targets are allowed")
            return True
        with self._lock:
            self._forwarded_requests.append(url)

        key = (host, port)
        upstream = await _idle_upstream(upstreams, key)  # None: (re)connect
        if upstream is None:
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                await self._reply(client, 502)
                return True
            with self._lock:
                self._upstream_connections_opened += 1
            upstream = H11Stream(up_reader, up_writer, h11.Connection(h11.CLIENT))
            upstreams[key] = upstream

        headers = [(n, v) for n, v in _filter_headers(request.headers) if n.lower() != b"host"]
        host_header = _get(request.headers, b"host") or parts.netloc.encode("latin-1")
        headers.insert(0, (b"Host", host_header))
        if body or _get(request.headers, b"content-length") is not None:
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"Content-Length", str(len(body)).encode()))
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        events: list[Any] = [
            h11.Request(method=request.method, target=path.encode("latin-1"), headers=headers)
        ]
        if body:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())

        # Relay while watching the client: if it goes away mid-exchange (a cancelled
        # request, a /hang), drop the upstream connection too, as a real proxy would,
        # so the server sees the disconnect instead of a connection held forever.
        relay = asyncio.ensure_future(self._relay(client, request, upstream, events))
        watch = asyncio.ensure_future(_read_until_eof(client))
        try:
            await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, watch):
                task.cancel()
            await asyncio.gather(relay, watch, return_exceptions=True)
        keep_upstream = False
        try:
            if relay.cancelled():
                return False  # client gone before the exchange finished
            keep_client, keep_upstream = relay.result()
            return keep_client
        finally:
            if keep_upstream:
                upstream.conn.start_next_cycle()
            else:
                del upstreams[key]
                await close_writer(upstream.writer)

    async def _relay(
        self, client: H11Stream, request: h11.Request, upstream: H11Stream, events: list[Any]
    ) -> tuple[bool, bool]:
        """Send the request upstream and stream the response back.

        Returns (keep the client connection, keep the upstream connection).  Upstream
        failures are mirrored: no response -> the client connection is dropped without
        one; a truncated body -> the client's body is truncated the same way.
        """
        try:
            await upstream.send(*events)
            response = await upstream.next_event()
            while isinstance(response, h11.InformationalResponse):
                response = await upstream.next_event()
            if not isinstance(response, h11.Response):
                return False, False
        except (OSError, h11.RemoteProtocolError):
            return False, False

        no_body = response.status_code in (204, 304) or request.method == b"HEAD"
        has_length = _get(response.headers, b"content-length") is not None
        upstream_closes = (
            response.http_version < b"1.1"
            or _has_token(response.headers, b"connection", b"close")
            or (
                not has_length
                and not _has_token(response.headers, b"transfer-encoding", b"chunked")
                and not no_body
            )
        )
        response_headers = _filter_headers(response.headers)
        if upstream_closes:
            response_headers.append((b"Connection", b"close"))
        if not has_length and not no_body:
            response_headers.append((b"Transfer-Encoding", b"chunked"))
        await client.send(
            h11.Response(
                status_code=response.status_code,
                headers=response_headers,
                reason=response.reason,
            )
        )
        while True:
            try:
                event = await upstream.next_event()
            except (OSError, h11.RemoteProtocolError):
                return False, False
            if isinstance(event, h11.Data):
                await client.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await client.send(h11.EndOfMessage())
                break
            else:
                return False, False  # upstream closed mid-body

        up_conn = upstream.conn
        reusable = up_conn.our_state is h11.DONE and up_conn.their_state is h11.DONE
        return not upstream_closes, reusable
