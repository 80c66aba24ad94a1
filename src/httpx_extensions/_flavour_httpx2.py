"""What differs between httpx and httpx2, the httpx2 side: the counterpart of ``_flavour.py``,
name for name, imported by the generated ``httpx_extensions.httpx2`` modules where the httpx
ones import ``_flavour``. It imports neither httpx nor httpcore. Each name says which httpx2
code it mirrors; ``tests/test_flavour.py`` checks both flavours against their package.
"""

from __future__ import annotations

import logging
import ssl

import httpx2
from httpx2._client import BoundAsyncStream

__all__ = [
    "BODY_METHODS",
    "NAME",
    "bind_stream",
    "client_logger",
    "default_ssl_context",
]

#: The distribution whose ``AsyncClient`` ExClient subclasses (for messages and tests).
NAME = "httpx2"

#: ``httpx2._client.logger``: the "HTTP Request: ..." INFO line of every response.
client_logger = logging.getLogger("httpx2")

#: ``httpx2.Request.__init__`` (``httpx2._models``): the methods that get ``Content-Length: 0``
#: when they are sent without a body; httpx2 added ``QUERY`` (RFC 10008).
BODY_METHODS = ("POST", "PUT", "PATCH", "QUERY")


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
