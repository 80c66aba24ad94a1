"""Exceptions raised by httpx-extensions.

Every error the library raises itself derives from :class:`HTTPXExtensionsError`, and also from
the nearest httpx (or built-in) error, so code written for stock httpx keeps catching it::

    HTTPXExtensionsError
    ├── PoolTimeout                (also httpx.PoolTimeout)
    ├── PoolClosed                 (also RuntimeError)
    ├── UnsupportedConfiguration   (also ValueError)
    └── ConnectionStateError       (also RuntimeError: a bug in the pool, please report it)

Errors from the network (connect, read, write, protocol) are raised as the plain httpx
exceptions, exactly as ``httpx.AsyncHTTPTransport`` raises them.
"""

from __future__ import annotations

import httpx

__all__ = [
    "ConnectionStateError",
    "HTTPXExtensionsError",
    "PoolClosed",
    "PoolTimeout",
    "UnsupportedConfiguration",
]


class HTTPXExtensionsError(Exception):
    """Base class of every exception raised by httpx-extensions itself."""


class PoolTimeout(HTTPXExtensionsError, httpx.PoolTimeout):
    """No connection became available within the request's ``pool`` timeout."""


class PoolClosed(HTTPXExtensionsError, RuntimeError):
    """A request was sent through a transport (pool) that has been closed."""


class UnsupportedConfiguration(HTTPXExtensionsError, ValueError):
    """An argument asks for something the pool cannot honour; the message says what to do."""


class ConnectionStateError(HTTPXExtensionsError, RuntimeError):
    """A connection was asked to make a state transition that its state machine forbids."""
