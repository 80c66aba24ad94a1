"""What differs between httpx and httpx2, the httpx side. Every name here has a counterpart of
the same shape in ``_flavour_httpx2.py``; the rest of the library is written once, on httpx,
and ``scripts/generate`` rewrites it for httpx2 (``httpx_extensions.httpx2``), importing that
module where this one is imported. Each name says which upstream code it mirrors, so a change
upstream is found here; ``tests/test_flavour.py`` checks both flavours against their package.
"""

from __future__ import annotations

import logging
import ssl

import certifi
import httpx
from httpx._client import BoundAsyncStream

__all__ = [
    "BODY_METHODS",
    "NAME",
    "bind_stream",
    "client_logger",
    "default_ssl_context",
]

#: The distribution whose ``AsyncClient`` ExClient subclasses (for messages and tests).
NAME = "httpx"

#: ``httpx._client.logger``: the "HTTP Request: ..." INFO line of every response.
client_logger = logging.getLogger("httpx")

#: ``httpx.Request.__init__`` (``httpx._models``): the methods that get ``Content-Length: 0``
#: when they are sent without a body.
BODY_METHODS = ("POST", "PUT", "PATCH")


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

