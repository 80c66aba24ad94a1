"""``ExClient``: ``httpx.AsyncClient`` on the reserving pool, with one flow per ``send()``.

httpx builds its transports in two private hooks, ``_init_transport`` and
``_init_proxy_transport``; overriding them is the only way to put our pool behind every route
httpx builds itself (the default route, ``proxy=`` and environment proxies) while leaving
``transport=`` and ``mounts=`` as they are. That is why httpx is capped below 0.29, and why
``tests/test_client.py`` fails loudly if httpx stops calling those hooks.

``_send_single_request`` is overridden too, for speed only: for our pool's responses it does
what httpx's does with less work per response; if httpx stopped calling it, ExClient would
still behave the same, just slower.
"""

from __future__ import annotations

import functools
import logging
import operator
import ssl
import time
import typing
from collections.abc import Callable, Mapping

import httpx
from httpx._client import (
    USE_CLIENT_DEFAULT,
    BaseClient,
    ClientState,
    UseClientDefault,
)

from ._exceptions import UnsupportedConfiguration
from ._flavour import (
    BODY_METHODS,
    STOCK_COOKIE_JARS,
    SYNC_REQUEST_REFUSED,
    bind_stream,
    client_logger,
    unfollowed_redirect,
)
from ._pool import ConnectionInfo, Flow, close_all, current_flow
from ._proxy_auth import check_proxy_auth
from ._transport import DEFAULT_LIMITS, HTTP2_REFUSED, ExTransport, _Response

if typing.TYPE_CHECKING:
    from ._auth import _SpnegoAuth
    from ._proxy_auth import ProxyAuthTypes

__all__ = ["ExClient"]

_DEFAULT_TIMEOUT = httpx.Timeout(timeout=5.0)
# The body of every request built without one (immutable; safe to share).
_EMPTY_BODY = httpx.ByteStream(b"")
# Blank httpx objects, filled in attribute by attribute where httpx's __init__ would redo
# conversions already done (see _build_bodyless_request).
_new_request = functools.partial(httpx.Request.__new__, httpx.Request)
_new_headers = functools.partial(httpx.Headers.__new__, httpx.Headers)
_lowered_name = operator.itemgetter(1)


async def _end_flow(flow: Flow) -> None:
    """End a send()'s flow: free its reservations, closing those the pool gives back."""
    for _pool, conns in flow.end():
        await close_all(conns)


@functools.lru_cache(maxsize=512)
def _parse_url(url: str) -> httpx.URL:
    # httpx parses a str URL on every request (~10 us); URLs are immutable, so clients that
    # call the same endpoints over and over can share the parsed ones.
    return httpx.URL(url)


class _Cookies(httpx.Cookies):
    """``httpx.Cookies`` that skips the cookie-jar machinery for responses without cookies.

    ``http.cookiejar`` wraps every response in urllib request/response shims before finding
    no ``Set-Cookie`` header (~15 us per response); the result is the same. A response from
    our pool says whether its head had such a header (found while reading its framing);
    others are looked at.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        if type(response) is _Response:
            if not response.sets_cookies:
                return
        else:
            headers = response.headers
            if "set-cookie" not in headers and "set-cookie2" not in headers:
                return
        super().extract_cookies(response)

    def __bool__(self) -> bool:
        # Asked on every request (is there anything to merge?). httpx's iterates the jar,
        # two generators deep, to find out; an empty stock jar's dict of domains says so.
        # A dict that is not empty may still hold no cookie (cleared paths): ask httpx.
        jar = self.jar
        if type(jar) in STOCK_COOKIE_JARS and not jar._cookies:  # type: ignore[attr-defined]
            return False
        return super().__bool__()


# Subclasses that override httpx's merge hooks get httpx's build_request (the fast path
# does the same merging without calling them); ExClient.__init_subclass__ sets
# _bodyless_fast_path on each.
_STOCK_MERGE_HOOKS = {
    name: getattr(BaseClient, name)  # where httpx defines them
    for name in ("_merge_url", "_merge_headers", "_merge_cookies", "_merge_queryparams")
}
# Likewise for send(): subclasses that override a step of httpx's send() that the fast path
# leaves out get httpx's send() (ExClient.__init_subclass__ sets _send_fast_path).
_SEND_STEPS = (
    "_build_request_auth",
    "_send_handling_auth",
    "_send_handling_redirects",
    "_build_redirect_request",
)
# The status codes httpx.Response.has_redirect_location looks for a Location header on.
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_CLOSED = ClientState.CLOSED
_OPENED = ClientState.OPENED


class ExClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose pool lets you choose the connection of each request.

    Takes the arguments of ``httpx.AsyncClient`` (httpx 0.28) and behaves the same, with
    these additions:

    * every response from the pool carries ``response.extensions["conn_id"]``;
    * a request with ``extensions={"conn_id": n}`` goes out on connection ``n``;
    * the requests one ``send()`` makes (auth legs, redirects) keep their connection
      reserved until ``send()`` returns (for streamed responses: until the response is closed),
      so a connection-bound handshake is never split across connections;
    * ``proxy_auth=`` answers a proxy's 407 (NTLM, Negotiate, Digest, Basic), for ``proxy=``
      and for environment proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``); see
      ``docs/proxies.md``.

    Args:
        proxy_auth: ``NTLMAuth``, ``NegotiateAuth``, ``httpx.BasicAuth``, ``httpx.DigestAuth``
            or a ``(user, password)`` tuple (answered with the strongest scheme the proxy
            offers). A ``Proxy(url, auth=...)`` with an auth object of its own keeps it.

    Raises:
        TypeError: ``proxy_auth`` is none of those.
        UnsupportedConfiguration: for ``http2=True`` and for limits that would close a
            connection between the legs of a handshake (zero keep-alive).
    """

    # Whether build_request() and send() may take their fast paths (see __init_subclass__).
    _bodyless_fast_path = True
    _send_fast_path = True

    def __init__(
        self,
        *,
        auth: httpx._types.AuthTypes | None = None,
        params: httpx._types.QueryParamTypes | None = None,
        headers: httpx._types.HeaderTypes | None = None,
        cookies: httpx._types.CookieTypes | None = None,
        verify: ssl.SSLContext | str | bool = True,
        cert: httpx._types.CertTypes | None = None,
        http1: bool = True,
        http2: bool = False,
        proxy: httpx._types.ProxyTypes | None = None,
        mounts: Mapping[str, httpx.AsyncBaseTransport | None] | None = None,
        timeout: httpx._types.TimeoutTypes = _DEFAULT_TIMEOUT,
        follow_redirects: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        max_redirects: int = 20,
        event_hooks: Mapping[str, list[Callable[..., typing.Any]]] | None = None,
        base_url: httpx.URL | str = "",
        transport: httpx.AsyncBaseTransport | None = None,
        trust_env: bool = True,
        default_encoding: str | Callable[[bytes], str] = "utf-8",
        proxy_auth: ProxyAuthTypes | None = None,
    ) -> None:
        if http2:
            raise UnsupportedConfiguration(HTTP2_REFUSED)
        # Before httpx builds the proxy transports, which read it.
        self._proxy_auth = check_proxy_auth(proxy_auth)
        super().__init__(
            auth=auth,
            params=params,
            headers=headers,
            cookies=cookies,
            verify=verify,
            cert=cert,
            http1=http1,
            http2=http2,
            proxy=proxy,
            mounts=mounts,
            timeout=timeout,
            follow_redirects=follow_redirects,
            limits=limits,
            max_redirects=max_redirects,
            event_hooks=event_hooks,
            base_url=base_url,
            transport=transport,
            trust_env=trust_env,
            default_encoding=default_encoding,
        )
        self._cookies = _Cookies(self._cookies)

    def __init_subclass__(cls, **kwargs: typing.Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._bodyless_fast_path = all(
            getattr(cls, name) is stock for name, stock in _STOCK_MERGE_HOOKS.items()
        )
        cls._send_fast_path = all(
            getattr(cls, name) is getattr(ExClient, name) for name in _SEND_STEPS
        )

    @property
    def cookies(self) -> httpx.Cookies:
        """Cookie values to include when sending requests (as ``httpx.AsyncClient.cookies``)."""
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: httpx._types.CookieTypes) -> None:
        self._cookies = _Cookies(cookies)

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: httpx._types.RequestContent | None = None,
        data: httpx._types.RequestData | None = None,
        files: httpx._types.RequestFiles | None = None,
        json: typing.Any | None = None,
        params: httpx._types.QueryParamTypes | None = None,
        headers: httpx._types.HeaderTypes | None = None,
        cookies: httpx._types.CookieTypes | None = None,
        timeout: httpx._types.TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
        extensions: httpx._types.RequestExtensions | None = None,
    ) -> httpx.Request:
        """Build a request, as ``httpx.AsyncClient.build_request`` does."""
        url = _parse_url(url) if type(url) is str else url
        if (
            self._bodyless_fast_path
            and content is None
            and data is None
            and files is None
            and json is None
            and params is None
            and cookies is None
            and not self.params
            and not self.cookies
        ):
            return self._build_bodyless_request(method, url, headers, timeout, extensions)
        return super().build_request(
            method,
            url,
            content=content,
            data=data,
            files=files,
            json=json,
            params=params,
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            extensions=extensions,
        )

    def _build_bodyless_request(
        self,
        method: str,
        url: httpx.URL | str,
        headers: httpx._types.HeaderTypes | None,
        timeout: httpx._types.TimeoutTypes | UseClientDefault,
        extensions: httpx._types.RequestExtensions | None,
    ) -> httpx.Request:
        # The common request (no body, query params or cookies to merge), built to the same
        # result as httpx's build_request with a fraction of the work: httpx copies the
        # headers into four Headers objects (converting and checking every name and value
        # each time), encodes an empty body and reads it back; here the client's headers,
        # already converted, are merged once and the request gets the empty body directly.
        # tests/test_client.py compares the result with httpx's, attribute by attribute.
        if not isinstance(url, httpx.URL):
            url = httpx.URL(url)
        if not url.is_absolute_url:
            base = self.base_url
            url = base.copy_with(raw_path=base.raw_path + url.raw_path.lstrip(b"/"))
        if headers is None:
            merged = self.headers
        else:
            merged = httpx.Headers(self.headers)
            merged.update(headers)
        # (raw name, lowercased name, value), as httpx.Headers keeps them.
        header_list: list[tuple[bytes, bytes, bytes]] = merged._list
        names = set(map(_lowered_name, header_list))
        auto: list[tuple[bytes, bytes, bytes]] = []
        if b"host" not in names and url.host:
            auto.append((b"Host", b"host", url.netloc))
        method = method.upper()  # as httpx.Request does (bytes stay bytes)
        if (
            method in BODY_METHODS
            and b"content-length" not in names
            and b"transfer-encoding" not in names
        ):
            auto.append((b"Content-Length", b"content-length", b"0"))
        if extensions is None:
            extensions = {}
        if "timeout" in extensions:
            extensions = dict(extensions)  # httpx.Request's own copy
        else:
            chosen = (
                self.timeout if isinstance(timeout, UseClientDefault) else httpx.Timeout(timeout)
            )
            extensions = dict(**extensions, timeout=chosen.as_dict())
        # httpx.Request(method, url, headers=..., stream=_EMPTY_BODY, extensions=...) and
        # its read(), attribute by attribute. The URL is shared rather than copied:
        # httpx.URL(url) of a URL is an equal, immutable value.
        request = _new_request()
        request.method = method
        request.url = url
        request_headers = _new_headers()
        request_headers._list = auto + header_list if auto else list(header_list)
        request_headers._encoding = None
        request.headers = request_headers
        request.extensions = extensions
        request.stream = _EMPTY_BODY
        request._content = b""
        return request

    # httpx's private transport hooks (see the module docstring).

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: httpx._types.CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> httpx.AsyncBaseTransport:
        if transport is not None:
            return transport
        return ExTransport(
            verify=verify, cert=cert, trust_env=trust_env, http1=http1, http2=http2, limits=limits
        )

    def _init_proxy_transport(
        self,
        proxy: httpx.Proxy,
        verify: ssl.SSLContext | str | bool = True,
        cert: httpx._types.CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> httpx.AsyncBaseTransport:
        return ExTransport(
            verify=verify,
            cert=cert,
            trust_env=trust_env,
            http1=http1,
            http2=http2,
            limits=limits,
            proxy=proxy,
            proxy_auth=self._proxy_auth,
        )

    async def _send_single_request(self, request: httpx.Request) -> httpx.Response:
        # httpx's own, for responses from our pool: the same result (request attached to
        # errors, elapsed set on close, cookies extracted, default_encoding, the "HTTP
        # Request" INFO log line) without a generator-based context manager and a wrapper
        # stream per response. Other transports (mounts, MockTransport, respx) go httpx's way.
        transport = self._transport_for_url(request.url)
        if not isinstance(transport, ExTransport):
            return await super()._send_single_request(request)
        started = time.perf_counter()
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise RuntimeError(SYNC_REQUEST_REFUSED)
        try:
            response = await transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request
            raise
        if type(response) is _Response:
            # Ours, as the transport made it: its stream is the pool's _ResponseStream, and
            # it knows whether its head had a Set-Cookie header.
            response._request = request  # the setter's work, without the call
            response.stream.time(response, started)  # type: ignore[union-attr]
            if response.sets_cookies:
                self.cookies.extract_cookies(response)
        else:  # respx-mocked: httpx's wrapper
            response.request = request
            stream = response.stream
            assert isinstance(stream, httpx.AsyncByteStream)
            response.stream = bind_stream(stream, response, started)
            self.cookies.extract_cookies(response)
        response.default_encoding = self._default_encoding
        # httpx logs each request at INFO on its logger; ExClient keeps doing so.
        if client_logger.isEnabledFor(logging.INFO):
            client_logger.info(
                'HTTP Request: %s %s "%s %d %s"',
                request.method,
                request.url,
                response.http_version,
                response.status_code,
                response.reason_phrase,
            )
        return response

    # One flow per send().

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: httpx._types.AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """Send a request, as ``httpx.AsyncClient.send`` does, inside one flow.

        Every connection a response of this call was read from stays reserved to the call
        until it returns, so auth handshakes and redirects stay on their connection. A streamed
        response keeps its own connection until it is closed.
        """
        flow = Flow(parent=current_flow.get())
        token = current_flow.set(flow)
        try:
            chosen = self._auth if isinstance(auth, UseClientDefault) else auth
            if not (
                self._send_fast_path
                and (
                    chosen is None
                    # Our NTLMAuth and NegotiateAuth (see _send_handling_connection_auth).
                    or (isinstance(chosen, httpx.Auth) and getattr(chosen, "_client_driven", False))
                )
                and not self._event_hooks["request"]
                and not self._event_hooks["response"]
                and self.max_redirects >= 0
                and not request.url.userinfo
            ):
                return await super().send(
                    request, stream=stream, auth=auth, follow_redirects=follow_redirects
                )
            # The common request: no auth (httpx's would be the no-op Auth()), no event
            # hooks, and so no redirect to follow unless the response is one. httpx's send()
            # still runs it through an auth-flow async generator and two more coroutines,
            # about a sixth of the client's CPU per request; this is what they do in that
            # case, in the same order, with the same errors. A redirect is handed to
            # httpx's own redirect loop once this first response has been read.
            if self._state is _CLOSED:
                raise RuntimeError("Cannot send a request, as the client has been closed.")
            self._state = _OPENED
            if isinstance(follow_redirects, UseClientDefault):
                follow_redirects = self.follow_redirects
            if "timeout" not in request.extensions:
                self._set_timeout(request)
            if chosen is not None:
                response = await self._send_handling_connection_auth(
                    request, typing.cast("_SpnegoAuth", chosen), follow_redirects
                )
                try:
                    # The handshake is over: nothing more goes out in this flow (as below).
                    await _end_flow(flow)
                    if not stream:
                        await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
                return response
            response = await self._send_single_request(request)
            try:
                response.history = []
                if response.status_code in _REDIRECT_CODES and response.has_redirect_location:
                    if follow_redirects:
                        next_request = self._build_redirect_request(request, response)
                        await response.aread()
                        response = await self._send_handling_redirects(
                            next_request, follow_redirects=True, history=[response]
                        )
                    else:
                        unfollowed_redirect(self, request, response)
                else:
                    # This response is the last of the flow: end it now, so that reading
                    # the body frees the connection at once instead of reserving it to a
                    # flow that makes no further request (the same end state, less work).
                    await _end_flow(flow)
                if not stream:
                    await response.aread()
            except BaseException:
                await response.aclose()
                raise
            return response
        finally:
            current_flow.reset(token)
            if flow.live:  # (the fast path may have ended it already)
                await _end_flow(flow)

    async def _send_handling_connection_auth(
        self, request: httpx.Request, auth: _SpnegoAuth, follow_redirects: bool
    ) -> httpx.Response:
        # httpx's _send_handling_auth for our own NTLMAuth and NegotiateAuth, with no event
        # hooks: the same requests, history, reads and closes, in the same order, but their
        # handshake generator driven here instead of through an auth-flow async generator
        # (its creation, its first-iteration hook and three resumptions, and two more
        # coroutines of httpx's: most of what a request on an authenticated connection cost
        # over a plain one).
        handshake, leg = await auth._async_begin(request)
        history: list[httpx.Response] = []
        try:
            while True:
                response = await self._send_leg(leg, follow_redirects, history)
                try:
                    next_leg = await auth._async_advance(handshake, response)
                    if next_leg is None:
                        return response
                    # (httpx sets response.history here again: _send_leg has set it.)
                    await response.aread()
                    leg = next_leg
                    history.append(response)
                except BaseException:
                    await response.aclose()
                    raise
        finally:
            handshake.close()

    async def _send_leg(
        self, request: httpx.Request, follow_redirects: bool, history: list[httpx.Response]
    ) -> httpx.Response:
        # httpx's _send_handling_redirects with no event hooks. Later legs go through it
        # as they are: it counts the 401s before them against max_redirects.
        if history:
            return await self._send_handling_redirects(
                request, follow_redirects=follow_redirects, history=history
            )
        response = await self._send_single_request(request)
        try:
            response.history = []
            if response.status_code in _REDIRECT_CODES and response.has_redirect_location:
                if not follow_redirects:
                    unfollowed_redirect(self, request, response)
                    return response
                next_request = self._build_redirect_request(request, response)
                await response.aread()
                return await self._send_handling_redirects(
                    next_request, follow_redirects=True, history=[response]
                )
        except BaseException:
            await response.aclose()
            raise
        return response

    # Introspection.

    @property
    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of every connection in the client's pools (default route and mounts).

        Each :class:`ConnectionInfo` has the ``conn_id``, ``origin``, ``partition``,
        ``state`` and ``reserved`` flag of one open connection. Routes served by a transport
        that is not an :class:`ExTransport` (``MockTransport``, ``ASGITransport``...) have no
        connections to show.
        """
        seen: set[int] = set()
        infos: list[ConnectionInfo] = []
        for transport in (self._transport, *self._mounts.values()):
            if isinstance(transport, ExTransport) and id(transport) not in seen:
                seen.add(id(transport))
                infos.extend(transport.connections)
        return infos
