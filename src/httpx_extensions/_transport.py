"""The httpx transport in front of the reserving pool.

It turns an ``httpx.Request`` into an httpcore request, checks a connection out of the pool
(honouring ``extensions["conn_id"]`` and ``extensions["partition"]``), opens it when new
(TCP, TLS, or through an HTTP proxy: absolute-form for ``http://`` targets, a CONNECT tunnel
for ``https://`` ones), and hands back an ``httpx.Response`` whose ``extensions["conn_id"]``
names the connection. The connection goes back to the pool when the response is closed.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import operator
import os
import ssl
import time
import typing
from collections.abc import Iterable
from types import TracebackType

import httpcore
import httpx

from ._exceptions import UnsupportedConfiguration
from ._extensions import CONN_ID, PARTITION, PREEMPTIVE
from ._flavour import SYNC_STREAM_REFUSED, default_ssl_context
from ._http11 import HTTP11Connection, ResponseHead, _Once
from ._pool import ConnectionInfo, ConnectionPool, PooledConnection, _origin_str, close_all
from ._proxy_auth import _PROXY_TRACE, ProxyAuthenticator, check_proxy_auth
from ._synchronization import AsyncBackends, async_shield

__all__ = ["AsyncHTTPTransportMixin", "ExTransport"]

if typing.TYPE_CHECKING:
    from ._proxy_auth import ProxyAuthTypes

logger = logging.getLogger("httpx_extensions.pool")

HTTP2_REFUSED = (
    "http2=True is not supported: NTLM and Negotiate authenticate a TCP connection and do not "
    "run over HTTP/2, and multiplexing makes connection pinning moot. Leave http2 off "
    "(ExClient speaks HTTP/1.1)."
)

#: httpx's default limits, restated so our default does not depend on httpx internals.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

_DEFAULT_PORTS = {b"http": 80, b"https": 443, b"ws": 80, b"wss": 443}
_TLS_SCHEMES = (b"https", b"wss")

# httpcore -> httpx, most specific first; the first isinstance match wins.
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


# Methods RFC 9110 9.2.2 calls idempotent, as urllib3's Retry.DEFAULT_ALLOWED_METHODS: only
# these are sent again after a reused connection was lost before the server answered.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# What a lost request looks like: the server closed (RemoteProtocolError: "disconnected
# without sending a response"), reset (ReadError), or stopped reading (WriteError) first.
_LOST_REQUEST_ERRORS = (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError)


def _can_resend(request: httpx.Request) -> bool:
    """An idempotent request whose body is in memory (so it can go out again unchanged)."""
    return request.method in _IDEMPOTENT_METHODS and isinstance(request.stream, httpx.ByteStream)


# Where a URL goes: (the URL, raw scheme, port, origin, request target), per URL object.
# httpx URLs are immutable, and ExClient hands out one object per str URL (_client's
# _parse_url), so a client calling the same endpoints finds them here instead of deriving
# them again (five URL properties and an Origin per request). Keyed by id(); the entry keeps
# its URL alive, so no other object can take that id while it is cached. Emptied when full.
_Route = tuple[httpx.URL, bytes, int, httpcore.Origin, bytes]
#: httpx.Headers._list: (name as given, lowercased name, value).
_HeaderList = list[tuple[bytes, bytes, bytes]]
_ROUTES_MAX = 256
_METHODS = {m: m.encode("ascii") for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")}

# Mocking libraries (respx) patch this method to intercept requests; when it is not httpcore's
# own, requests are handed to it so those mocks work with ExClient unchanged.
_STOCK_POOL_HANDLER = httpcore.AsyncConnectionPool.handle_async_request


def _map_exception(exc: Exception) -> httpx.HTTPError | None:
    """The httpx exception for an httpcore one, or None when it is not httpcore's."""
    for core_type, httpx_type in _EXCEPTIONS:
        if isinstance(exc, core_type):
            return httpx_type(str(exc))
    return None


def _ca_from_env(trust_env: bool) -> bool:
    """Whether ``httpx.create_ssl_context(verify=True)`` would take CAs from the environment."""
    return trust_env and bool(os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"))


def _check_limits(limits: httpx.Limits) -> None:
    # A zero here would close the connection between the legs of a handshake.
    if limits.keepalive_expiry is not None and limits.keepalive_expiry <= 0:
        raise UnsupportedConfiguration(
            f"keepalive_expiry={limits.keepalive_expiry!r} would close every connection as "
            "soon as its response ends, which breaks connection-bound auth (NTLM, Negotiate) "
            "and pinning; use a positive number of seconds, or None for no expiry."
        )
    if limits.max_keepalive_connections is not None and limits.max_keepalive_connections <= 0:
        raise UnsupportedConfiguration(
            f"max_keepalive_connections={limits.max_keepalive_connections!r} would close every "
            "connection as soon as its response ends, which breaks connection-bound auth and "
            "pinning; use a positive number, or None for no bound."
        )
    if limits.max_connections is not None and limits.max_connections <= 0:
        raise UnsupportedConfiguration(
            f"max_connections={limits.max_connections!r} leaves no connection to send on; "
            "use a positive number, or None for no bound."
        )


class _ResponseStream(httpx.AsyncByteStream):
    """The response body; closing it gives the connection back to the pool."""

    __slots__ = ("_closed", "_conn", "_iterator", "_pool", "_started", "_stream", "_timed")

    def __init__(
        self, stream: typing.AsyncIterable[bytes], pool: ConnectionPool, conn: PooledConnection
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._conn = conn
        self._closed = False
        self._iterator: typing.AsyncIterator[bytes] | None = None
        self._timed: _Response | None = None
        self._started = 0.0

    @property
    def in_memory(self) -> _Once | None:
        """The whole body, when it arrived with the response head (None otherwise)."""
        stream = self._stream
        return stream if type(stream) is _Once else None

    def time(self, response: _Response, started: float) -> None:
        """Set ``response.elapsed`` on close, from ``started`` (``time.perf_counter()``).

        ExClient asks this instead of wrapping the stream in one more object for it, as
        httpx's client does.
        """
        self._timed = response
        self._started = started

    # An iterator object rather than an async generator: one fewer generator per response.
    def __aiter__(self) -> _ResponseStream:
        self._iterator = self._stream.__aiter__()
        return self

    async def __anext__(self) -> bytes:
        assert self._iterator is not None
        try:
            return await self._iterator.__anext__()
        except StopAsyncIteration:
            raise
        except Exception as exc:
            mapped = _map_exception(exc)  # None for errors that are not httpcore's
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        timed = self._timed
        if timed is not None:
            # Seconds for now: _Response.elapsed makes the timedelta when asked, and most
            # responses never are (a timedelta from a float was ~1% of a request's CPU).
            timed._elapsed_seconds = time.perf_counter() - self._started
            self._timed = None  # no cycle left behind
        try:
            aclose = getattr(self._stream, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            # Decide synchronously even when cancelled: a cancelled close leaves httpcore's
            # connection mid-response, and release() then closes it instead of reusing it.
            # (The pool's release(), without its coroutine: most releases close nothing.)
            to_close = self._pool.release_nowait(self._conn)
            if to_close:
                await close_all(to_close)


class _Response(httpx.Response):
    """An ``httpx.Response`` whose ``aread()`` takes a body that is already in memory directly.

    Most API responses arrive with their head in one read; ``httpx.Response.aread()`` would
    still pass that one chunk through three async generators, a decoder and two chunkers
    (about a tenth of the client's CPU per request). When nothing can have touched the body
    yet and it needs no decoding, it is taken as it is; the result (``content``,
    ``num_bytes_downloaded``, ``is_stream_consumed``, ``is_closed``, ``elapsed``, the
    connection released) is what the stock path produces. Anything else (streaming,
    ``Content-Encoding``, a body still arriving) goes the stock way.
    """

    #: False when the response came without Set-Cookie headers (ExClient's jar skips it).
    sets_cookies = True
    #: Set by the stream on close; becomes ``elapsed`` when that is first read.
    _elapsed_seconds: float

    @property
    def elapsed(self) -> datetime.timedelta:
        """The time taken from sending the request to closing the response.

        As ``httpx.Response.elapsed`` (and a RuntimeError until the response is closed).
        """
        seconds = self.__dict__.pop("_elapsed_seconds", None)
        if seconds is not None:
            self._elapsed = datetime.timedelta(seconds=seconds)
        return super().elapsed

    @elapsed.setter
    def elapsed(self, elapsed: datetime.timedelta) -> None:
        self.__dict__.pop("_elapsed_seconds", None)
        self._elapsed = elapsed

    @classmethod
    def from_pool(
        cls,
        status_code: int,
        headers: list[tuple[bytes, bytes]],
        stream: _ResponseStream,
        extensions: dict[str, typing.Any],
        header_list: list[tuple[bytes, bytes, bytes]] | None = None,
    ) -> _Response:
        """``_Response(status_code, headers=headers, stream=stream, extensions=extensions)``.

        The same object httpx's ``__init__`` makes (``tests/test_transport_response.py``
        compares them attribute by attribute), for a fifth of the work: the headers come
        from our parser as validated ``bytes`` pairs, so the per-header type checks and
        conversions of ``httpx.Headers`` have nothing to do, and ``extensions`` is a dict
        made for this response alone, so it needs no copy. ``header_list`` is ``headers``
        with their lowercased names, as ``httpx.Headers`` keeps them, when the parser has it.
        """
        response = cls.__new__(cls)
        response.status_code = status_code
        response_headers = _new_headers()
        response_headers._list = (
            [(key, key.lower(), value) for key, value in headers]
            if header_list is None
            else header_list
        )
        response_headers._encoding = None
        response.headers = response_headers
        response._request = None
        response.next_request = None
        response.extensions = extensions
        response.history = []
        response.is_closed = False
        response.is_stream_consumed = False
        response.default_encoding = "utf-8"
        response.stream = stream
        response._num_bytes_downloaded = 0
        return response

    async def aread(self) -> bytes:
        # Only while the stream is still the pool's (a hook may have wrapped or replaced it).
        stream = self.stream
        if (
            isinstance(stream, _ResponseStream)
            and (once := stream.in_memory) is not None
            and not self.is_stream_consumed
            and not self.is_closed
            and not hasattr(self, "_content")
            and not _has_content_encoding(self.headers)
        ):
            content = once.take()
            self.is_stream_consumed = True
            self._num_bytes_downloaded = len(content)
            self._content = content
            # aclose(), inline: the stream is the pool's, so the checks it makes are made.
            self.is_closed = True
            try:
                await stream.aclose()
            # A body in memory: the pool's stream closes it without I/O (the release is
            # synchronous and close_all() only logs a failing close), so nothing raises here.
            except httpx.RequestError as exc:  # pragma: no cover - no I/O that could fail
                with contextlib.suppress(RuntimeError):  # no request attached: leave it
                    exc.request = self.request
                raise
            return content
        return await super().aread()

    async def aclose(self) -> None:
        # httpx's, with a try block in place of its generator-based context manager.
        if not isinstance(self.stream, httpx.AsyncByteStream):
            raise RuntimeError(SYNC_STREAM_REFUSED)
        if not self.is_closed:
            self.is_closed = True
            try:
                await self.stream.aclose()
            except httpx.RequestError as exc:
                with contextlib.suppress(RuntimeError):  # no request attached: leave it
                    exc.request = self.request
                raise


_new_headers = functools.partial(httpx.Headers.__new__, httpx.Headers)
_lowered_name = operator.itemgetter(1)


def _has_content_encoding(headers: httpx.Headers) -> bool:
    """``"content-encoding" in headers``, without working out the headers' text encoding."""
    if type(headers) is not httpx.Headers:  # replaced by a hook: ask it
        return "content-encoding" in headers
    return b"content-encoding" in map(_lowered_name, headers._list)


class ExTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncHTTPTransport`` work-alike on the reserving pool.

    Takes the same arguments as ``httpx.AsyncHTTPTransport``, plus ``proxy_auth``. Pass it as
    ``ExClient(transport=...)`` or in ``mounts=`` to tune one route; ``ExClient`` builds one
    for you otherwise.

    Args:
        proxy_auth: How to answer the 407 of ``proxy`` (an HTTP or HTTPS proxy):
            ``NTLMAuth``, ``NegotiateAuth``, ``httpx.BasicAuth``, ``httpx.DigestAuth`` or a
            ``(user, password)`` tuple. A ``Proxy(url, auth=<auth object>)`` keeps its own;
            credentials in the proxy URL are used when neither is given. See
            ``docs/proxies.md``.

    Raises:
        UnsupportedConfiguration: ``http2=True``, ``http1=False``, or limits the pool cannot
            honour (zero keep-alive), with a sentence saying why.
        TypeError: ``proxy_auth`` is none of the accepted kinds, or is given for a SOCKS5
            proxy.
        ValueError: ``proxy_auth`` without ``proxy``.
    """

    def __init__(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: httpx._types.CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        proxy: httpx._types.ProxyTypes | None = None,
        uds: str | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
        proxy_auth: ProxyAuthTypes | None = None,
    ) -> None:
        if http2:
            raise UnsupportedConfiguration(HTTP2_REFUSED)
        if not http1:
            raise UnsupportedConfiguration(
                "http1=False leaves no protocol to speak: ExClient supports HTTP/1.1 only."
            )
        if not isinstance(limits, httpx.Limits):
            raise TypeError(f"limits must be an httpx.Limits, not {type(limits).__name__}")
        _check_limits(limits)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
        checked_auth = check_proxy_auth(proxy_auth)

        self._ssl: ssl.SSLContext | None = None
        if not (verify is True and cert is None and not _ca_from_env(trust_env)):
            # Anything but the default: built now, so a bad bundle, path or certificate
            # fails here, as with httpx. The default (a CA bundle, about 20 ms to load)
            # is built on the first TLS connection, so clients that never open one never pay.
            self._ssl = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
            self._ssl.set_alpn_protocols(["http/1.1"])
        self._uds = uds
        self._local_address = local_address
        self._retries = retries
        self._socket_options = list(socket_options) if socket_options is not None else None
        self._keepalive_expiry = limits.keepalive_expiry
        self._backends = AsyncBackends()
        self._mock_pool: httpcore.AsyncConnectionPool | None = None
        self._routes: dict[int, _Route] = {}
        # The last request's headers as httpx keeps them (a copy) and as (name, value) pairs.
        self._last_headers: tuple[_HeaderList, list[tuple[bytes, bytes]]] | None = None

        self._proxy: httpx.Proxy | None = None
        self._socks = False
        self._proxy_origin: httpcore.Origin | None = None
        self._proxy_headers: list[tuple[bytes, bytes]] = []
        self._proxy_auth: ProxyAuthenticator | None = None
        if proxy is not None:
            self._init_proxy(
                httpx.Proxy(url=proxy) if isinstance(proxy, (str, httpx.URL)) else proxy,
                checked_auth,
            )
        elif checked_auth is not None:
            raise ValueError("proxy_auth= answers a proxy: pass proxy= too")

        self._pool = ConnectionPool(
            self._open_connection,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )

    def _init_proxy(self, proxy: httpx.Proxy, proxy_auth: ProxyAuthTypes | None) -> None:
        scheme = proxy.url.scheme
        if scheme in ("socks5", "socks5h"):
            try:
                import socksio  # noqa: F401
            except ImportError:
                raise ImportError(
                    "Using a SOCKS proxy, but the 'socksio' package is not installed. "
                    "Install it with `pip install httpx-extensions[socks]`."
                ) from None
        # Other schemes never get here: httpx.Proxy refuses them with a ValueError.
        self._proxy = proxy
        url = proxy.url
        self._socks = scheme.startswith("socks")
        self._proxy_origin = httpcore.Origin(
            url.raw_scheme, url.raw_host, url.port or _DEFAULT_PORTS.get(url.raw_scheme, 1080)
        )
        self._proxy_headers = list(proxy.headers.raw)
        if self._socks:
            if proxy_auth is not None or not isinstance(proxy.auth, (tuple, type(None))):
                raise TypeError(
                    "a SOCKS5 proxy takes a (user, password) in its URL or Proxy(auth=...) "
                    "only; proxy_auth= is for HTTP proxies"
                )
            return
        # An auth object on the Proxy is the most specific choice; then proxy_auth=; then
        # credentials in the proxy URL (or a Proxy(auth=(user, password))), which are tried
        # with whatever scheme the proxy offers (docs/proxies.md).
        auth = check_proxy_auth(proxy.auth, "Proxy(auth=...)")
        if proxy_auth is not None and (auth is None or isinstance(auth, tuple)):
            auth = proxy_auth
        self._proxy_auth = ProxyAuthenticator(auth, url)

    # Introspection.

    @property
    def _ssl_context(self) -> ssl.SSLContext:
        context = self._ssl
        if context is None:  # the default, as httpx's verify=True (see _flavour)
            context = self._ssl = default_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
        return context

    @property
    def pool(self) -> ConnectionPool:
        """The :class:`ConnectionPool` behind this transport."""
        return self._pool

    @property
    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of every open connection: id, origin, partition, state, reservation."""
        return self._pool.connections

    def __repr__(self) -> str:
        proxy = f" via {self._proxy.url}" if self._proxy is not None else ""
        return f"<ExTransport{proxy} {self._pool!r}>"

    # Sending.

    def _route(self, request: httpx.Request) -> _Route:
        """Where ``request.url`` goes, checked, and kept for the next request to that URL."""
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            if not scheme:
                raise httpx.UnsupportedProtocol(
                    "Request URL is missing an 'http://' or 'https://' protocol.",
                    request=request,
                )
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{url.scheme}://'.", request=request
            )
        if not url.raw_host:
            raise httpx.UnsupportedProtocol("Request URL is missing a host name.", request=request)
        port = url.port or _DEFAULT_PORTS[scheme]
        route = (url, scheme, port, httpcore.Origin(scheme, url.raw_host, port), url.raw_path)
        routes = self._routes
        if len(routes) >= _ROUTES_MAX:
            routes.clear()
        routes[id(url)] = route
        return route

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        route = self._routes.get(id(url))
        if route is None or route[0] is not url:
            route = self._route(request)
        _, scheme, port, origin, target = route
        extensions = request.extensions
        pin = extensions.get(CONN_ID)
        if pin is not None and (isinstance(pin, bool) or not isinstance(pin, int)):
            raise TypeError(
                f"request.extensions[{CONN_ID!r}] must be the int found on "
                f"response.extensions[{CONN_ID!r}], not {type(pin).__name__}"
            )
        partition = extensions.get(PARTITION)
        proxy_auth = self._proxy_auth
        if proxy_auth is not None and proxy_auth.partition is not None:
            # The identity presented to the proxy is part of the key (curl CVE-2016-0755).
            partition = (partition, proxy_auth.partition)
        timeout = extensions.get("timeout")
        pool_timeout = timeout.get("pool") if timeout else None

        # request.headers.raw builds a new list of pairs on each access; a client sends the
        # same headers request after request, so the pairs made for the last one are reused
        # when its headers are equal. (Nothing downstream changes the list it is given.)
        header_list = request.headers._list
        last_headers = self._last_headers
        if last_headers is not None and last_headers[0] == header_list:
            headers = last_headers[1]
        else:
            headers = [(key, value) for key, _, value in header_list]
            self._last_headers = (list(header_list), headers)
        forward = proxy_auth is not None and scheme not in _TLS_SCHEMES
        if forward:
            # Forward proxying: absolute-form target on a connection to the proxy.
            target = bytes(str(url), "ascii")
            headers = self._with_proxy_headers(headers)
        method = _METHODS.get(request.method) or request.method.encode("ascii")

        if httpcore.AsyncConnectionPool.handle_async_request is not _STOCK_POOL_HANDLER:
            return await self._handle_mocked(request, port, target, headers)
        fresh = False
        while True:
            try:
                conn = await self._pool.acquire(
                    request, origin, partition, pin, pool_timeout, fresh=fresh
                )
            except Exception as exc:
                mapped = _map_exception(exc)
                if mapped is None:
                    raise
                raise mapped from exc
            connection: HTTP11Connection = conn.connection  # type: ignore[assignment]
            try:
                wire = headers
                if conn.requests == 1 and PREEMPTIVE in extensions:
                    # A new connection: the auth opens its handshake on this request (its
                    # preemptive= option), with the bindings of this connection's certificate.
                    preempt = extensions[PREEMPTIVE]
                    wire = [*headers, *await preempt(request, connection._stream)]
                if forward:  # through the proxy's 407 handshake (docs/proxies.md)
                    head = await self._send_forward(conn, method, target, wire, request)
                else:
                    head = await connection.send(method, target, wire, request.stream, extensions)
                break
            except BaseException as exc:
                await self._pool.release(conn)
                if (
                    not fresh
                    and conn.requests > 1
                    and isinstance(exc, _LOST_REQUEST_ERRORS)
                    and not connection.answered()
                    and _can_resend(request)
                ):
                    # The server closed (or reset) a reused keep-alive connection as this
                    # request went out, before answering: it cannot have acted on it. Send it
                    # once more, on a new connection (urllib3 and aiohttp do the same).
                    logger.debug(
                        "conn_id %s was closed by the server before it answered; sending "
                        "%s %s again on a new connection (%r)",
                        conn.conn_id,
                        request.method,
                        _origin_str(origin),
                        exc,
                    )
                    fresh = True
                    pin = None
                    continue
                mapped = _map_exception(exc) if isinstance(exc, Exception) else None
                if mapped is None:
                    raise
                raise mapped from exc
        response = _Response.from_pool(
            head.status,
            head.headers,
            _ResponseStream(head.stream, self._pool, conn),
            {
                "http_version": head.http_version,
                "reason_phrase": head.reason,
                "network_stream": head.network_stream,
                CONN_ID: conn.conn_id,
            },
            head.header_list,
        )
        if not head.set_cookie:
            response.sets_cookies = False
        return response

    async def _handle_mocked(
        self,
        request: httpx.Request,
        port: int,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> httpx.Response:
        if self._mock_pool is None:
            self._mock_pool = httpcore.AsyncConnectionPool(ssl_context=self._ssl_context)
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme,
                host=url.raw_host,
                port=port,
                target=target,
            ),
            headers=headers,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._mock_pool.handle_async_request(core_request)
        except Exception as exc:
            mapped = _map_exception(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=response.stream,  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    async def _send_forward(
        self,
        conn: PooledConnection,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        request: httpx.Request,
    ) -> ResponseHead:
        """A forward-proxied request, its 407s answered on the same proxy connection.

        The connection stays checked out between the legs (never back in the pool), so no
        other request can take it mid-handshake; if the proxy closes it after a 407, a new
        one to the proxy replaces it under the same conn_id.
        """
        proxy_auth = self._proxy_auth
        assert proxy_auth is not None
        channel = _ForwardChannel(self, conn, method, target, headers, request)
        if proxy_auth.configured and proxy_auth.may_challenge():
            # A 407 would need the body again: read a streamed one into memory first. Even on
            # an authenticated connection: some proxies re-challenge every request.
            await request.aread()
        return await proxy_auth.run(
            channel, request.method, str(request.url), request.extensions.get(_PROXY_TRACE)
        )

    def _with_proxy_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        if not self._proxy_headers:
            return headers
        own = {key.lower() for key, _ in headers}
        return [(k, v) for k, v in self._proxy_headers if k.lower() not in own] + list(headers)

    # Connecting.

    async def _open_connection(
        self, origin: httpcore.Origin, request: httpx.Request
    ) -> HTTP11Connection:
        timeouts = request.extensions.get("timeout") or {}
        timeout = timeouts.get("connect")
        if origin.scheme in _TLS_SCHEMES or (
            self._proxy_origin is not None and self._proxy_origin.scheme == b"https"
        ):
            _ = self._ssl_context  # built (on first use) before a socket is opened
        if self._proxy_origin is None:
            stream = await self._connect_tcp(origin, timeout)
            if origin.scheme in _TLS_SCHEMES:
                sni = request.extensions.get("sni_hostname") or origin.host.decode("ascii")
                stream = await self._start_tls(stream, self._ssl_context, sni, timeout)
            return HTTP11Connection(origin, stream, self._keepalive_expiry)

        proxy_origin = self._proxy_origin
        if not self._socks:
            stream = await self._connect_proxy(timeout)
            if origin.scheme not in _TLS_SCHEMES:
                return _ProxyConnection(proxy_origin, stream, self._keepalive_expiry)
            stream = await self._tunnel(stream, proxy_origin, origin, request)
            sni = request.extensions.get("sni_hostname") or origin.host.decode("ascii")
            stream = await self._start_tls(stream, self._ssl_context, sni, timeout)
            return HTTP11Connection(origin, stream, self._keepalive_expiry)
        # SOCKS5.
        stream = await self._connect_tcp(proxy_origin, timeout)
        try:
            await self._socks5_connect(stream, origin, timeout)
        except BaseException:
            await stream.aclose()
            raise
        if origin.scheme in _TLS_SCHEMES:
            sni = request.extensions.get("sni_hostname") or origin.host.decode("ascii")
            stream = await self._start_tls(stream, self._ssl_context, sni, timeout)
        return HTTP11Connection(origin, stream, self._keepalive_expiry)

    async def _connect_proxy(self, timeout: float | None) -> httpcore.AsyncNetworkStream:
        """A stream to the HTTP proxy: TCP, then TLS for an ``https://`` proxy."""
        proxy_origin = self._proxy_origin
        assert proxy_origin is not None
        assert self._proxy is not None
        stream = await self._connect_tcp(proxy_origin, timeout)
        if proxy_origin.scheme == b"https":
            proxy_context = self._proxy.ssl_context or self._ssl_context
            stream = await self._start_tls(
                stream, proxy_context, proxy_origin.host.decode("ascii"), timeout
            )
        return stream

    async def _connect_tcp(
        self, origin: httpcore.Origin, timeout: float | None
    ) -> httpcore.AsyncNetworkStream:
        backend = self._backends.current()
        retries_left = self._retries
        delay = 0.0
        while True:
            try:
                if self._uds is not None:
                    stream = await backend.connect_unix_socket(self._uds, timeout=timeout)
                else:
                    stream = await backend.connect_tcp(
                        origin.host.decode("ascii"),
                        origin.port,
                        timeout=timeout,
                        local_address=self._local_address,
                    )
                break
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                if retries_left <= 0:
                    raise
                retries_left -= 1
                await backend.sleep(delay)
                delay = 0.5 if delay == 0 else delay * 2
        if self._socket_options:
            # Set here for both backends, so that a failing option closes the socket
            # (httpcore's AnyIO backend leaves it open) and is a ConnectError everywhere.
            try:
                sock = stream.get_extra_info("socket")
                for option in self._socket_options:
                    sock.setsockopt(*option)
            except OSError as exc:
                await stream.aclose()
                raise httpcore.ConnectError(f"could not set a socket option: {exc}") from exc
        return stream

    async def _start_tls(
        self,
        stream: httpcore.AsyncNetworkStream,
        context: ssl.SSLContext,
        server_hostname: str,
        timeout: float | None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            return await stream.start_tls(context, server_hostname=server_hostname, timeout=timeout)
        except BaseException:
            await stream.aclose()
            raise

    async def _socks5_connect(
        self, stream: httpcore.AsyncNetworkStream, origin: httpcore.Origin, timeout: float | None
    ) -> None:
        """The SOCKS5 greeting, optional username/password login, and CONNECT to ``origin``."""
        from socksio import socks5

        assert self._proxy is not None
        auth = self._proxy.raw_auth
        method = (
            socks5.SOCKS5AuthMethod.NO_AUTH_REQUIRED
            if auth is None
            else socks5.SOCKS5AuthMethod.USERNAME_PASSWORD
        )
        conn = socks5.SOCKS5Connection()

        async def exchange(message: typing.Any) -> typing.Any:
            conn.send(message)
            await stream.write(conn.data_to_send(), timeout=timeout)
            data = await stream.read(4096, timeout=timeout)
            if not data:
                raise httpcore.ProxyError("The SOCKS proxy closed the connection.")
            return conn.receive_data(data)

        reply = await exchange(socks5.SOCKS5AuthMethodsRequest([method]))
        if reply.method != method:
            raise httpcore.ProxyError(
                f"The SOCKS proxy refused authentication method {method.name}."
            )
        if auth is not None:
            login = await exchange(socks5.SOCKS5UsernamePasswordRequest(*auth))
            if not login.success:
                raise httpcore.ProxyError("The SOCKS proxy rejected the username or password.")
        reply = await exchange(
            socks5.SOCKS5CommandRequest.from_address(
                socks5.SOCKS5Command.CONNECT, (origin.host.decode("ascii"), origin.port)
            )
        )
        if reply.reply_code != socks5.SOCKS5ReplyCode.SUCCEEDED:
            raise httpcore.ProxyError(
                f"The SOCKS proxy could not connect to {origin.host.decode('ascii')}:"
                f"{origin.port}: {reply.reply_code.name}."
            )

    async def _tunnel(
        self,
        stream: httpcore.AsyncNetworkStream,
        proxy_origin: httpcore.Origin,
        origin: httpcore.Origin,
        request: httpx.Request,
    ) -> httpcore.AsyncNetworkStream:
        """CONNECT to ``origin``, answering the proxy's 407s on the same connection."""
        assert self._proxy_auth is not None
        channel = _TunnelChannel(self, stream, proxy_origin, origin, request)
        try:
            head = await self._proxy_auth.run(
                channel,
                "CONNECT",
                channel.target.decode("ascii"),
                request.extensions.get(_PROXY_TRACE),
            )
        except BaseException:
            await channel.connection.aclose()
            raise
        if not 200 <= head.status < 300:
            reason = head.reason.decode("ascii", "ignore")
            await channel.connection.aclose()
            raise httpcore.ProxyError(f"{head.status} {reason}".strip())
        return head.network_stream

    # Shutdown.

    async def aclose(self) -> None:
        await self._pool.aclose()
        if self._mock_pool is not None:
            await self._mock_pool.aclose()

    async def __aenter__(self) -> ExTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()


class _ProxyConnection(HTTP11Connection):
    """A connection to a forward proxy; remembers whether the proxy authenticated it."""

    __slots__ = ("proxy_authenticated",)

    def __init__(
        self,
        origin: httpcore.Origin,
        stream: httpcore.AsyncNetworkStream,
        keepalive_expiry: float | None = None,
    ) -> None:
        super().__init__(origin, stream, keepalive_expiry)
        self.proxy_authenticated = False

    @property
    def network_stream(self) -> httpcore.AsyncNetworkStream:
        return self._stream


class _ForwardChannel:
    """The proxy-auth driver's view of a forward-proxy connection checked out of the pool."""

    def __init__(
        self,
        transport: ExTransport,
        conn: PooledConnection,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._conn = conn
        self._method = method
        self._target = target
        self._headers = headers
        self._request = request

    @property
    def _connection(self) -> _ProxyConnection:
        return typing.cast(_ProxyConnection, self._conn.connection)

    @property
    def network_stream(self) -> httpcore.AsyncNetworkStream:
        return self._connection.network_stream

    @property
    def authenticated(self) -> bool:
        return self._connection.proxy_authenticated

    @authenticated.setter
    def authenticated(self, value: bool) -> None:
        self._connection.proxy_authenticated = value

    async def send(self, proxy_authorization: bytes | None, *, body: bool) -> ResponseHead:
        headers = self._headers
        stream: typing.Iterable[bytes] | typing.AsyncIterable[bytes] = self._request.stream
        if proxy_authorization is not None:
            headers = [(k, v) for k, v in headers if k.lower() != b"proxy-authorization"]
            headers.append((b"Proxy-Authorization", proxy_authorization))
        if not body:
            # NTLM's negotiate leg: the proxy answers 407 whatever it carries, so the body
            # is not uploaded twice (as curl does).
            headers = [
                (k, v)
                for k, v in headers
                if k.lower() not in (b"content-length", b"transfer-encoding")
            ]
            headers.append((b"Content-Length", b"0"))
            stream = ()
        return await self._connection.send(
            self._method, self._target, headers, stream, self._request.extensions
        )

    def reusable(self) -> bool:
        return self._connection.is_idle()

    async def reconnect(self) -> None:
        old = self._connection
        with async_shield():
            await old.aclose()
        timeouts = self._request.extensions.get("timeout") or {}
        transport = self._transport
        stream = await transport._connect_proxy(timeouts.get("connect"))
        assert transport._proxy_origin is not None
        self._conn.connection = _ProxyConnection(
            transport._proxy_origin, stream, transport._keepalive_expiry
        )


class _TunnelChannel:
    """The proxy-auth driver's view of a connection being turned into a CONNECT tunnel."""

    def __init__(
        self,
        transport: ExTransport,
        stream: httpcore.AsyncNetworkStream,
        proxy_origin: httpcore.Origin,
        origin: httpcore.Origin,
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._proxy_origin = proxy_origin
        self._request = request
        self.network_stream = stream
        self.connection = HTTP11Connection(proxy_origin, stream)
        self.target = b"%b:%d" % (origin.host, origin.port)
        self.authenticated = False  # a tunnel carries one CONNECT: nothing to remember

    async def send(self, proxy_authorization: bytes | None, *, body: bool) -> ResponseHead:
        headers = [
            (b"Host", self.target),
            (b"Accept", b"*/*"),
            # HTTP/1.0-era proxies close after a 407 unless asked not to (curl sends it too).
            (b"Proxy-Connection", b"Keep-Alive"),
            *self._transport._proxy_headers,
        ]
        if proxy_authorization is not None:
            headers = [(k, v) for k, v in headers if k.lower() != b"proxy-authorization"]
            headers.append((b"Proxy-Authorization", proxy_authorization))
        return await self.connection.send(
            b"CONNECT", self.target, headers, (), self._request.extensions
        )

    def reusable(self) -> bool:
        return self.connection.is_idle()

    async def reconnect(self) -> None:
        with async_shield():
            await self.connection.aclose()
        timeouts = self._request.extensions.get("timeout") or {}
        self.network_stream = await self._transport._connect_proxy(timeouts.get("connect"))
        self.connection = HTTP11Connection(self._proxy_origin, self.network_stream)


#: The seed's name for the transport, kept importable.
AsyncHTTPTransportMixin = ExTransport
