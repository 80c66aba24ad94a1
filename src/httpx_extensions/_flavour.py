"""What differs between httpx and httpx2, the httpx side. Every name here has a counterpart of
the same shape in ``_flavour_httpx2.py``; the rest of the library is written once, on httpx,
and ``scripts/generate`` rewrites it for httpx2 (``httpx_extensions.httpx2``), importing that
module where this one is imported. Each name says which upstream code it mirrors, so a change
upstream is found here; ``tests/test_flavour.py`` checks both flavours against their package.
"""

from __future__ import annotations

import logging
import ssl
from http.cookiejar import CookieJar

import certifi
import httpx
from httpx._client import BoundAsyncStream, BoundSyncStream

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
NAME = "httpx"

#: ``httpx._client.logger``: the "HTTP Request: ..." INFO line of every response.
client_logger = logging.getLogger("httpx")

#: ``httpx.Request.__init__`` (``httpx._models``): the methods that get ``Content-Length: 0``
#: when they are sent without a body.
BODY_METHODS = ("POST", "PUT", "PATCH")

#: ``httpx.AsyncClient._send_single_request``: a request whose body is not async.
SYNC_REQUEST_REFUSED = "Attempted to send an sync request with an AsyncClient instance."
#: ``httpx.Response.aclose``: a response whose stream is not async.
SYNC_STREAM_REFUSED = "Attempted to call an async close on an sync stream."
#: ``httpx.Client._send_single_request``: a request whose body is not sync (ExSyncClient).
ASYNC_REQUEST_REFUSED = "Attempted to send an async request with a sync Client instance."
#: ``httpx.Response.close``: a response whose stream is not sync (ExSyncClient).
ASYNC_STREAM_REFUSED = "Attempted to call an sync close on an async stream."

#: The jar classes ``httpx.Cookies.__init__`` makes (``httpx._models``); for those, an empty
#: ``_cookies`` dict means an empty jar (ExClient's cookie check skips iterating it).
STOCK_COOKIE_JARS: tuple[type[CookieJar], ...] = (CookieJar,)


def default_ssl_context() -> ssl.SSLContext:
    """``httpx.create_ssl_context(verify=True)`` when ``SSL_CERT_FILE``/``SSL_CERT_DIR`` are
    not in play (``httpx._config``): a default context on certifi's CA bundle."""
    return ssl.create_default_context(cafile=certifi.where())


def bind_stream(
    stream: httpx.AsyncByteStream, response: httpx.Response, start: float
) -> httpx.AsyncByteStream:
    """The wrapper ``httpx.AsyncClient._send_single_request`` puts around a transport's
    response stream, which sets ``response.elapsed`` (from ``start``) when it is closed."""
    return BoundAsyncStream(stream, response=response, start=start)


def bind_sync_stream(
    stream: httpx.SyncByteStream, response: httpx.Response, start: float
) -> httpx.SyncByteStream:
    """``bind_stream`` for ExSyncClient: ``httpx.Client._send_single_request``'s wrapper."""
    return BoundSyncStream(stream, response=response, start=start)


def unfollowed_redirect(
    client: httpx.AsyncClient | httpx.Client, request: httpx.Request, response: httpx.Response
) -> None:
    """The ``follow_redirects=False`` branch of ``httpx.AsyncClient._send_handling_redirects``:
    the next request goes on ``response.next_request``; a Location that is not a URL raises
    ``httpx.RemoteProtocolError``."""
    response.next_request = client._build_redirect_request(request, response)


#: The upstream code ExClient overrides, or does the work of on its fast paths, each with the
#: SHA-256 (first 16 hex digits) of its source as last read against ours. When httpx
#: changes one, ``tests/test_flavour.py`` fails: read the new code against the override
#: (``_client.py``, ``_transport.py``), port what changed, and record the new digest here.
UPSTREAM_CODE = {
    "AsyncClient.__init__": "4dc8397d2249ef58",
    "AsyncClient.send": "76a23b35cd47c95e",
    "AsyncClient._send_single_request": "339c8a224990002f",
    "AsyncClient._init_transport": "e0a943317ef65dd4",
    "AsyncClient._init_proxy_transport": "95dcc6c52696881f",
    "AsyncClient._send_handling_auth": "73be9fe146881fca",
    "AsyncClient._send_handling_redirects": "88dba22b42995950",
    "BaseClient.build_request": "30899d7e06788df4",
    "AsyncHTTPTransport.__init__": "433c33239d86ec87",
    "Request.__init__": "23b22679c8fb4319",
    "Response.__init__": "44f5163543520e9d",
    "Response.aread": "b6908ee9b52c8ec6",
    "Response.aclose": "f5682caf50a17357",
    "Response.elapsed": "387e2287357151f7",
    "Cookies.extract_cookies": "ed8dc7a9b42d238e",
    "Cookies.__init__": "ac01259d6d59021c",
    "Cookies.__bool__": "227480ea5e4f09cf",
}
