"""httpx-extensions: an ``httpx.AsyncClient`` whose pool lets you choose the connection.

See ``ExClient`` for the client, ``ExTransport`` for the transport, and ``docs/pool.md`` for
how the pool works (the pages are installed with the package: ``httpx-extensions docs``).
``ExSyncClient`` and ``ExSyncTransport``: the same for ``httpx.Client``, thread-safe.

Every public name is imported on first use: ``NTLMAuth`` and ``NegotiateAuth`` with pyspnego
(and its crypto stack), so programs that never authenticate never load them
(``bench/startup.py`` measures what the import costs); the client, the transport and the
exceptions with httpx, so ``import httpx_extensions.httpx2`` (the same library on httpx2)
never imports httpx.
"""

from __future__ import annotations

import importlib
import typing

from . import _redact  # noqa: F401  (installs the httpcore log filters; see its docstring)
from .__version__ import __version__
from ._extensions import CONN_ID, PARTITION

if typing.TYPE_CHECKING:  # what mypy and IDEs see; at run time __getattr__ imports them
    from ._auth import MutualAuth, NegotiateAuth, NTLMAuth
    from ._client import ExClient
    from ._exceptions import (
        AuthenticationError,
        ConnectionStateError,
        HTTPXExtensionsError,
        PoolClosed,
        PoolTimeout,
        ProxyAuthenticationError,
        UnsupportedConfiguration,
    )
    from ._proxy_auth import Proxy
    from ._state import ConnectionInfo, ConnectionState
    from ._sync._client import ExSyncClient
    from ._sync._transport import ExSyncTransport
    from ._transport import AsyncHTTPTransportMixin, ExTransport

__all__ = [
    "AsyncHTTPTransportMixin",
    "AuthenticationError",
    "CONN_ID",
    "ConnectionInfo",
    "ConnectionState",
    "ConnectionStateError",
    "ExClient",
    "ExSyncClient",
    "ExSyncTransport",
    "ExTransport",
    "HTTPXExtensionsError",
    "MutualAuth",
    "NTLMAuth",
    "NegotiateAuth",
    "PARTITION",
    "PoolClosed",
    "PoolTimeout",
    "Proxy",
    "ProxyAuthenticationError",
    "UnsupportedConfiguration",
    "__version__",
]

# Public name -> private module that defines it, imported on first access.
_LAZY = {
    "AsyncHTTPTransportMixin": "._transport",
    "AuthenticationError": "._exceptions",
    "ConnectionInfo": "._state",
    "ConnectionState": "._state",
    "ConnectionStateError": "._exceptions",
    "ExClient": "._client",
    "ExSyncClient": "._sync._client",
    "ExSyncTransport": "._sync._transport",
    "ExTransport": "._transport",
    "HTTPXExtensionsError": "._exceptions",
    "MutualAuth": "._auth",
    "NTLMAuth": "._auth",
    "NegotiateAuth": "._auth",
    "PoolClosed": "._exceptions",
    "PoolTimeout": "._exceptions",
    "Proxy": "._proxy_auth",
    "ProxyAuthenticationError": "._exceptions",
    "UnsupportedConfiguration": "._exceptions",
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
