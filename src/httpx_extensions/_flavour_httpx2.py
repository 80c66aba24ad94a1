"""What differs between httpx and httpx2, the httpx2 side: the counterpart of ``_flavour.py``,
name for name, imported by the generated ``httpx_extensions.httpx2`` modules where the httpx
ones import ``_flavour``. It imports neither httpx nor httpcore. Each name says which httpx2
code it mirrors; ``tests/test_flavour.py`` checks both flavours against their package.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from http.cookiejar import CookieJar

from httpx2._client import BoundAsyncStream, BoundSyncStream
from httpx2._cookies import IndexedCookieJar

import httpx2

__all__ = [
    "ASYNC_REQUEST_REFUSED",
    "ASYNC_STREAM_REFUSED",
    "BODY_METHODS",
    "NAME",
    "STOCK_COOKIE_JARS",
    "SYNC_REQUEST_REFUSED",
    "SYNC_STREAM_REFUSED",
    "UPSTREAM_CODE",
    "bind_stream",
    "bind_sync_stream",
    "client_logger",
    "default_ssl_context",
    "unfollowed_redirect",
]

#: The distribution whose ``AsyncClient`` ExClient subclasses (for messages and tests).
NAME = "httpx2"

#: ``httpx2._client.logger``: the "HTTP Request: ..." INFO line of every response.
client_logger = logging.getLogger("httpx2")

#: ``httpx2.Request.__init__`` (``httpx2._models``): the methods that get ``Content-Length: 0``
#: when they are sent without a body; httpx2 added ``QUERY`` (RFC 10008).
BODY_METHODS = ("POST", "PUT", "PATCH", "QUERY")

#: ``httpx2.AsyncClient._send_single_request``: a request whose body is not async.
SYNC_REQUEST_REFUSED = "Attempted to send a sync request with an AsyncClient instance."
#: ``httpx2.Response.aclose``: a response whose stream is not async.
SYNC_STREAM_REFUSED = "Attempted to call an async close on a sync stream."
#: ``httpx2.Client._send_single_request``: a request whose body is not sync (ExSyncClient).
ASYNC_REQUEST_REFUSED = "Attempted to send an async request with a sync Client instance."
#: ``httpx2.Response.close``: a response whose stream is not sync (ExSyncClient).
ASYNC_STREAM_REFUSED = "Attempted to call a sync close on an async stream."

#: The jar classes ``httpx2.Cookies.__init__`` makes (``httpx2._models``); for those, an empty
#: ``_cookies`` dict means an empty jar (ExClient's cookie check skips iterating it).
STOCK_COOKIE_JARS: tuple[type[CookieJar], ...] = (CookieJar, IndexedCookieJar)


def default_ssl_context() -> ssl.SSLContext:
    """``httpx2.create_ssl_context(verify=True)`` when ``SSL_CERT_FILE``/``SSL_CERT_DIR`` are
    not in play (``httpx2._config``, which calls ``httpcore2.default_ssl_context``): the
    operating system's trust store (truststore) on Windows and macOS, OpenSSL's default
    locations on Linux. Corporate TLS-inspection CAs installed in the OS keep working."""
    return httpx2.create_ssl_context(verify=True, trust_env=False)


def bind_stream(
    stream: httpx2.AsyncByteStream, response: httpx2.Response, start: float
) -> httpx2.AsyncByteStream:
    """The wrapper ``httpx2.AsyncClient._send_single_request`` puts around a transport's
    response stream. httpx2's keeps the elapsed time on the stream itself (it no longer takes
    the response), and ``httpx2.Response.elapsed`` reads it from there."""
    del response  # the httpx signature's argument; httpx2's wrapper does not take it
    return BoundAsyncStream(stream, start=start)


def bind_sync_stream(
    stream: httpx2.SyncByteStream, response: httpx2.Response, start: float
) -> httpx2.SyncByteStream:
    """``bind_stream`` for the sync client: ``httpx2.Client._send_single_request``'s wrapper."""
    del response  # as in bind_stream
    return BoundSyncStream(stream, start=start)


def unfollowed_redirect(
    client: httpx2.AsyncClient | httpx2.Client,
    request: httpx2.Request,
    response: httpx2.Response,
) -> None:
    """The ``follow_redirects=False`` branch of ``httpx2.AsyncClient._send_handling_redirects``:
    the next request goes on ``response.next_request``; httpx2 leaves it ``None`` for a
    Location that is not a URL (httpx raised ``RemoteProtocolError``)."""
    with contextlib.suppress(httpx2.RemoteProtocolError):
        response.next_request = client._build_redirect_request(request, response)


#: The upstream code ExClient overrides, or does the work of on its fast paths, each with the
#: SHA-256 (first 16 hex digits) of its source as last read against ours. When httpx2
#: changes one, ``tests/test_flavour.py`` fails: read the new code against the override
#: (``_client.py``, ``_transport.py``), port what changed, and record the new digest here.
UPSTREAM_CODE = {
    "AsyncClient.__init__": "13f6cb0815629447",
    "AsyncClient.send": "d35c44e4c5d773d1",
    "AsyncClient._send_single_request": "d52736d2ea8c529b",
    "AsyncClient._init_transport": "e0a943317ef65dd4",
    "AsyncClient._init_proxy_transport": "95dcc6c52696881f",
    "AsyncClient._send_handling_auth": "73be9fe146881fca",
    "AsyncClient._send_handling_redirects": "b5d01089a129961c",
    "BaseClient.build_request": "3b5079943b9776a0",
    "AsyncHTTPTransport.__init__": "ed8da41b7119c7ad",
    "Request.__init__": "1bccd583f10d7bb8",
    "Response.__init__": "451ab7373ee4215a",
    "Response.aread": "b3e3f5f85388b593",
    "Response.aclose": "826a885c19b72aa7",
    "Response.elapsed": "f031f05835d44b00",
    "Cookies.extract_cookies": "677f72ed98cb7770",
    "Cookies.__init__": "d70130f69554260c",
    "Cookies.__bool__": "227480ea5e4f09cf",
}
