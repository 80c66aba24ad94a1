"""Loopback-only test servers: an HTTP/1.1 server and an HTTP proxy, each on its own
event loop thread so tests can drive the client under asyncio or trio."""

from __future__ import annotations

from .httpserver import LoopbackServer, RequestRecord
from .proxy import LoopbackProxy

__all__ = ["LoopbackProxy", "LoopbackServer", "RequestRecord"]
