"""Test auth classes for the loopback server's connection-bound ``/auth`` endpoint.

The handshake has the shape of NTLM: an anonymous request gets ``401 Nonce``; leg 1
(``Nonce init``) gets a nonce that is valid only on the connection that issued it; leg 2 sends
it back. Once authenticated, a connection serves anonymous requests as that user.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import anyio
import httpx

from httpx_extensions import CONN_ID, PARTITION


class NonceAuth(httpx.Auth):
    """Connection-bound two-leg auth, optionally copying conn_id onto the next leg."""

    def __init__(self, user: str, *, copy_conn_id: bool = True, partition: bool = True) -> None:
        self.user = user
        self.copy_conn_id = copy_conn_id
        self.partition = partition

    def _prepare(self, request: httpx.Request) -> None:
        if self.partition:
            request.extensions[PARTITION] = ("nonce", self.user)

    def _next_leg(self, request: httpx.Request, response: httpx.Response, value: str) -> None:
        request.headers.encoding = "utf-8"  # user names may be non-ASCII
        request.headers["Authorization"] = f"Nonce {value} user={self.user}"
        if self.copy_conn_id:
            request.extensions[CONN_ID] = response.extensions[CONN_ID]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._prepare(request)
        response = yield request
        if response.status_code != 401:
            return
        self._next_leg(request, response, "init")
        response = yield request
        nonce = response.headers["WWW-Authenticate"].split()[-1]
        self._next_leg(request, response, nonce)
        yield request


class SlowNonceAuth(NonceAuth):
    """The same handshake, pausing between legs (to cancel or time out mid-handshake)."""

    def __init__(self, user: str, pause: float) -> None:
        super().__init__(user)
        self.pause = pause

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        self._prepare(request)
        response = yield request
        if response.status_code != 401:
            return
        await anyio.sleep(self.pause)
        self._next_leg(request, response, "init")
        response = yield request
        await anyio.sleep(self.pause)
        nonce = response.headers["WWW-Authenticate"].split()[-1]
        self._next_leg(request, response, nonce)
        yield request
