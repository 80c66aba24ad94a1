"""Loopback-only test servers: an HTTP/1.1 server, an HTTP proxy and an IIS-like
NTLM/Negotiate server, each on its own event loop thread so tests can drive the client
under asyncio or trio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .httpserver import LoopbackServer, RequestRecord
from .proxy import LoopbackProxy
from .socks import LoopbackSocksProxy

if TYPE_CHECKING:
    from .ntlm import IISLikeServer, NTLMRequestRecord, write_user_file

__all__ = [
    "LoopbackSocksProxy",
    "IISLikeServer",
    "LoopbackProxy",
    "LoopbackServer",
    "NTLMRequestRecord",
    "RequestRecord",
    "write_user_file",
]

_NTLM_EXPORTS = frozenset({"IISLikeServer", "NTLMRequestRecord", "write_user_file"})


def __getattr__(name: str) -> Any:
    # The NTLM server needs pyspnego and cryptography; importing it on first use keeps the
    # other servers (and every test that only uses them) free of those dependencies.
    if name in _NTLM_EXPORTS:
        from . import ntlm

        return getattr(ntlm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
