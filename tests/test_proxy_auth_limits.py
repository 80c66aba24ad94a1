"""A proxy whose 407 body never ends costs its connection, not the request's life."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import anyio
import httpx
import pytest

from httpx_extensions import ExClient, ExSyncClient, ProxyAuthenticationError

from .conftest import assert_pool_clean

ALICE = ("EXAMPLE\\alice", "Passw0rd")


class EndlessProxy:
    """Answers every request head with a 407 whose chunked body goes on until the client
    closes the connection; counts connections and the body bytes it got out on each."""

    CHALLENGE = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Digest realm="proxy", nonce="abc", qop="auth"\r\n'
        b"Transfer-Encoding: chunked\r\n\r\n"
    )

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> EndlessProxy:
        self._accept.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        socket.create_connection(self._listener.getsockname()).close()  # wakes accept()
        self._accept.join()
        self._listener.close()
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._stop.is_set():
                conn.close()
                return
            self.connections += 1
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _answer(self, conn: socket.socket) -> None:
        chunk = b"4000\r\n" + b"x" * 0x4000 + b"\r\n"
        with conn:
            conn.settimeout(10)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    received = conn.recv(4096)
                    if not received:
                        return
                    data += received
                conn.sendall(self.CHALLENGE)
                while not self._stop.is_set():
                    conn.sendall(chunk)
            except OSError:
                return  # the client closed it: what the test waits for


@pytest.fixture
def endless() -> Iterator[EndlessProxy]:
    with EndlessProxy() as proxy:
        yield proxy


@pytest.mark.anyio
@pytest.mark.parametrize("target", ["http://127.0.0.1:9/", "https://127.0.0.1:9/"])
async def test_proxy_endless_407_body_closes_the_connection_and_fails_the_request(
    endless: EndlessProxy, target: str
) -> None:
    async with ExClient(proxy=endless.url, proxy_auth=httpx.DigestAuth(*ALICE)) as client:
        # A guard against the hang this test exists for, not a measurement: without the
        # bound on a 407's body the drain reads for as long as the proxy sends.
        with anyio.fail_after(60), pytest.raises(ProxyAuthenticationError) as caught:
            await client.get(target)
        assert_pool_clean(client)
    assert caught.value.reason == "rejected"
    # Digest answers on the second leg: the first connection was given up mid-body and the
    # answer went out on a new one, which got the endless 407 again (so: rejected).
    assert endless.connections == 2


@pytest.mark.parametrize("target", ["http://127.0.0.1:9/", "https://127.0.0.1:9/"])
def test_proxy_endless_407_body_on_the_sync_client(endless: EndlessProxy, target: str) -> None:
    caught: list[BaseException] = []

    def get() -> None:
        with ExSyncClient(proxy=endless.url, proxy_auth=httpx.DigestAuth(*ALICE)) as client:
            try:
                client.get(target)
            except ProxyAuthenticationError as exc:
                caught.append(exc)
            assert_pool_clean(client)

    thread = threading.Thread(target=get, daemon=True)
    thread.start()
    thread.join(60)  # a guard against the hang, not a measurement
    assert not thread.is_alive(), "the request is still draining the endless 407 body"
    (error,) = caught
    assert isinstance(error, ProxyAuthenticationError)
    assert error.reason == "rejected"
    assert endless.connections == 2
