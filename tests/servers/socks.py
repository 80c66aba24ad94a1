"""A SOCKS5 proxy on loopback (RFC 1928, with RFC 1929 username/password), for ExTransport's
``socks5://`` proxies. It relays only to loopback targets.

Written against the RFCs with plain asyncio streams (not socksio, which the client side uses),
so the two sides do not share a parser's mistakes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct

from .httpserver import ThreadedLoopbackBase, close_writer
from .proxy import _LOOPBACK_HOSTS, _pipe_both_ways

__all__ = ["LoopbackSocksProxy"]

_NO_AUTH, _USER_PASS, _NO_ACCEPTABLE = 0x00, 0x02, 0xFF


class LoopbackSocksProxy(ThreadedLoopbackBase):
    """SOCKS5 proxy on 127.0.0.1: CONNECT only, loopback targets only.

    ``auth=("user", "pass")`` requires username/password authentication.
    ``connect_requests`` lists each CONNECT target as ``host:port``.
    """

    _thread_name = "loopback-socks"

    def __init__(self, *, auth: tuple[str, str] | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(host=host, ssl_context=None)
        self.auth = auth
        self._connect_requests: list[str] = []

    def __enter__(self) -> LoopbackSocksProxy:
        self.start()
        return self

    @property
    def url(self) -> str:
        return f"socks5://{self.host}:{self.port}"

    @property
    def connect_requests(self) -> list[str]:
        with self._lock:
            return list(self._connect_requests)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seq: int
    ) -> None:
        try:
            version, count = await reader.readexactly(2)
            methods = await reader.readexactly(count)
            wanted = _NO_AUTH if self.auth is None else _USER_PASS
            if version != 5 or wanted not in methods:
                writer.write(bytes([5, _NO_ACCEPTABLE]))
                return
            writer.write(bytes([5, wanted]))
            if self.auth is not None and not await self._check_password(reader, writer):
                return
            version, command, _, atype = await reader.readexactly(4)
            if atype == 1:
                host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
            elif atype == 4:
                host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
            else:
                (length,) = await reader.readexactly(1)
                host = (await reader.readexactly(length)).decode("idna")
            (port,) = struct.unpack("!H", await reader.readexactly(2))
            with self._lock:
                self._connect_requests.append(f"{host}:{port}")
            if command != 1:
                writer.write(bytes([5, 7, 0, 1, 0, 0, 0, 0, 0, 0]))  # command not supported
                return
            if host not in _LOOPBACK_HOSTS:
                writer.write(bytes([5, 2, 0, 1, 0, 0, 0, 0, 0, 0]))  # not allowed by ruleset
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                writer.write(bytes([5, 5, 0, 1, 0, 0, 0, 0, 0, 0]))  # connection refused
                return
            writer.write(bytes([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]))
            try:
                await _pipe_both_ways(reader, writer, up_reader, up_writer)
            finally:
                await close_writer(up_writer, abort=self._stopping)
        except asyncio.IncompleteReadError:
            return
        finally:
            await close_writer(writer, abort=self._stopping)

    async def _check_password(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        assert self.auth is not None
        _version, user_length = await reader.readexactly(2)
        user = await reader.readexactly(user_length)
        (password_length,) = await reader.readexactly(1)
        password = await reader.readexactly(password_length)
        ok = (user.decode(), password.decode()) == self.auth
        writer.write(bytes([1, 0 if ok else 1]))
        return ok
