"""The keep-alive retry inside an NTLM handshake: a lost leg restarts the handshake.

Between the client and the IIS-like server sits a relay that forwards bytes both ways and,
once, drops a client connection without forwarding or answering the moment a chosen request
arrives on it (the server side of that connection is closed too, as when a load balancer or
the server itself drops a keep-alive connection). The leg that was lost went out on a reused
connection and got no byte of an answer, so the transport sends it again on a new
connection; a handshake cannot move to another connection, so the auth flow starts it
afresh there.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from httpx_extensions import CONN_ID, ExClient, NTLMAuth

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file

pytestmark = pytest.mark.anyio

# base64 of "NTLMSSP\0" followed by message type 1 or 3 (little-endian 32 bits).
NEGOTIATE_MESSAGE = b"NTLM TlRMTVNTUAABAAAA"
AUTHENTICATE_MESSAGE = b"NTLM TlRMTVNTUAADAAAA"


class DroppingRelay:
    """A TCP relay on 127.0.0.1 that drops one connection when ``drop(request_bytes)`` says so."""

    def __init__(self, target_port: int, drop: Callable[[bytes], bool]) -> None:
        self._target = ("127.0.0.1", target_port)
        self._drop = drop
        self._dropped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self.connections = 0

    @property
    def dropped(self) -> bool:
        return self._dropped.is_set()

    def __enter__(self) -> DroppingRelay:
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        # The accept thread first: a connection it accepted meanwhile is listed before the
        # sockets are closed, not left for the GC (a ResourceWarning in a later test).
        self._threads[0].join(5)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            self.connections += 1
            for args in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pipe, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pipe(self, source: socket.socket, sink: socket.socket, inspect: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if inspect and not self._dropped.is_set() and self._drop(data):
                    self._dropped.set()
                    for sock in (source, sink):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(
        tmp_path_factory.mktemp("retry-auth") / "users.txt", [("EXAMPLE", "alice", "Passw0rd")]
    )


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


async def test_retry_lost_authenticate_leg_restarts_the_handshake(iis: IISLikeServer) -> None:
    with DroppingRelay(iis.port, lambda data: AUTHENTICATE_MESSAGE in data) as relay:
        async with ExClient(auth=NTLMAuth("EXAMPLE\\alice", "Passw0rd")) as client:
            response = await client.get(relay.url + "/data")
            assert relay.dropped
            assert (response.status_code, response.json()["user"]) == (200, "EXAMPLE\\alice")
            again = await client.get(relay.url + "/data")
            assert again.status_code == 200
            assert again.extensions[CONN_ID] == response.extensions[CONN_ID]
            assert_pool_clean(client)
    assert iis.handshakes_completed == 1


async def test_retry_lost_request_on_an_authenticated_connection_logs_on_again(
    iis: IISLikeServer,
) -> None:
    requests = 0

    def second_plain_request(data: bytes) -> bool:
        # The request after the logon goes on the authenticated connection without a token.
        nonlocal requests
        if b"Authorization:" not in data:
            requests += 1
        return requests == 2

    with DroppingRelay(iis.port, second_plain_request) as relay:
        async with ExClient(auth=NTLMAuth("EXAMPLE\\alice", "Passw0rd")) as client:
            first = await client.get(relay.url + "/data")
            second = await client.get(relay.url + "/data")
            assert relay.dropped
            assert (second.status_code, second.json()["user"]) == (200, "EXAMPLE\\alice")
            assert second.extensions[CONN_ID] != first.extensions[CONN_ID]
            assert_pool_clean(client)
    assert iis.handshakes_completed == 2
