"""httpx-extensions: an ``httpx.AsyncClient`` whose pool lets you choose the connection.

See ``ExClient`` for the client, ``ExTransport`` for the transport, and ``docs/pool.md`` for
how the pool works.
"""

from __future__ import annotations

from .__version__ import __version__
from ._auth import AuthenticationError, MutualAuth, NegotiateAuth, NTLMAuth
from ._client import ExClient
from ._exceptions import (
    ConnectionStateError,
    HTTPXExtensionsError,
    PoolClosed,
    PoolTimeout,
    UnsupportedConfiguration,
)
from ._extensions import CONN_ID, PARTITION
from ._pool import ConnectionInfo, ConnectionState
from ._transport import AsyncHTTPTransportMixin, ExTransport

__all__ = [
    "AsyncHTTPTransportMixin",
    "AuthenticationError",
    "CONN_ID",
    "ConnectionInfo",
    "ConnectionState",
    "ConnectionStateError",
    "ExClient",
    "ExTransport",
    "HTTPXExtensionsError",
    "MutualAuth",
    "NTLMAuth",
    "NegotiateAuth",
    "PARTITION",
    "PoolClosed",
    "PoolTimeout",
    "UnsupportedConfiguration",
    "__version__",
]
