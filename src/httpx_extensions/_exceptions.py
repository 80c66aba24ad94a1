"""Exceptions raised by httpx-extensions.

Every error the library raises itself derives from :class:`HTTPXExtensionsError`, and also from
the nearest httpx (or built-in) error, so code written for stock httpx keeps catching it::

    HTTPXExtensionsError
    ├── AuthenticationError        (also httpx.HTTPError)
    ├── PoolTimeout                (also httpx.PoolTimeout)
    ├── ProxyAuthenticationError   (also httpx.ProxyError: a final 407 from a proxy)
    ├── PoolClosed                 (also RuntimeError)
    ├── UnsupportedConfiguration   (also ValueError)
    └── ConnectionStateError       (also RuntimeError: a bug in the pool, please report it)

Errors from the network (connect, read, write, protocol) are raised as the plain httpx
exceptions, exactly as ``httpx.AsyncHTTPTransport`` raises them.
"""

from __future__ import annotations

import httpx

__all__ = [
    "AuthenticationError",
    "ConnectionStateError",
    "HTTPXExtensionsError",
    "PoolClosed",
    "PoolTimeout",
    "ProxyAuthenticationError",
    "UnsupportedConfiguration",
]


class HTTPXExtensionsError(Exception):
    """Base class of every exception raised by httpx-extensions itself."""


# Here rather than beside the auth classes: catching it must not import pyspnego.
class AuthenticationError(HTTPXExtensionsError, httpx.HTTPError):
    """A handshake could not be carried out: a malformed or truncated challenge, a server that
    dropped the connection between legs, or an error from the security provider (pyspnego,
    chained as ``__cause__``). The message names the scheme and what went wrong.

    A login the *server* rejects (wrong NTLM password) is not an error: the final 401 is
    returned, once. With Kerberos only (``NegotiateAuth(..., allow_ntlm=False)``) and an
    explicit password, the KDC refuses a wrong password before anything is sent, and that is
    an AuthenticationError; with NTLM allowed, SPNEGO falls back to NTLM and the server's
    final 401 is returned.
    """

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        if request is not None:
            self.request = request


class PoolTimeout(HTTPXExtensionsError, httpx.PoolTimeout):
    """No connection became available within the request's ``pool`` timeout."""


class ProxyAuthenticationError(HTTPXExtensionsError, httpx.ProxyError):
    """A proxy answered 407 and the handshake with it could not succeed.

    The message names the proxy, the schemes it offered and why: no proxy credentials were
    given (and how to give them), none of the given credentials fits the schemes offered, the
    credentials were rejected, or the proxy closed the connection between the legs of a
    connection-bound handshake. It never holds a token, password or header value.

    Attributes:
        proxy: The proxy's URL, without credentials.
        offered: The schemes the last 407 offered (``("NTLM", "Negotiate")``).
        reason: ``"no_credentials"``, ``"unsupported_scheme"``, ``"rejected"``, ``"closed"``
            or ``"provider"`` (the security provider failed: pyspnego's error is the cause).
    """

    def __init__(self, message: str, *, proxy: str, offered: tuple[str, ...], reason: str) -> None:
        super().__init__(message)
        self.proxy = proxy
        self.offered = offered
        self.reason = reason


class PoolClosed(HTTPXExtensionsError, RuntimeError):
    """A request was sent through a transport (pool) that has been closed."""


class UnsupportedConfiguration(HTTPXExtensionsError, ValueError):
    """An argument asks for something the pool cannot honour; the message says what to do."""


class ConnectionStateError(HTTPXExtensionsError, RuntimeError):
    """A connection was asked to make a state transition that its state machine forbids."""
