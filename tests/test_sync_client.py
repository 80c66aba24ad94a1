"""ExSyncClient (generated from ExClient by scripts/generate): plain requests, conn_id, pins,
partitions, limits and thread safety, with real threads and loopback sockets; and NTLM from
16 threads against the IIS-like server."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import httpx_extensions
from httpx_extensions import (
    CONN_ID,
    PARTITION,
    ConnectionState,
    ExSyncClient,
    ExSyncTransport,
    NTLMAuth,
)

from .conftest import assert_pool_clean
from .servers import IISLikeServer, LoopbackServer, write_user_file

USERS = [("EXAMPLE", "alice", "Passw0rd"), ("EXAMPLE", "bob", "hunter2")]
ALICE = ("EXAMPLE\\alice", "Passw0rd")
BOB = ("EXAMPLE\\bob", "hunter2")


def in_threads(n: int, threads: int, fn: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, range(n)))


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("sync") / "users.txt", USERS, store_hashes=True)


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


# The public face.


def test_sync_client_is_a_drop_in_httpx_client() -> None:
    assert issubclass(ExSyncClient, httpx.Client)
    assert issubclass(ExSyncTransport, httpx.BaseTransport)
    assert httpx_extensions.ExSyncClient is ExSyncClient
    stock = inspect.signature(httpx.Client.__init__).parameters
    ours = inspect.signature(ExSyncClient.__init__).parameters
    assert set(stock) <= set(ours)
    assert set(ours) - set(stock) == {"proxy_auth"}
    for name, parameter in stock.items():
        assert ours[name].default == parameter.default, name


def test_sync_client_refuses_http2_with_a_sentence() -> None:
    with pytest.raises(httpx_extensions.UnsupportedConfiguration, match="HTTP/2"):
        ExSyncClient(http2=True)


# Plain requests, conn_id and pins.


def test_sync_client_reuses_one_connection_and_shows_its_conn_id(server: LoopbackServer) -> None:
    with ExSyncClient() as client:
        first = client.get(server.url + "/")
        second = client.post(server.url + "/echo", content=b"x" * 10_000)
        assert first.status_code == 200
        assert second.status_code == 200
        assert first.extensions[CONN_ID] == second.extensions[CONN_ID]
        with client.stream("GET", server.url + "/") as streamed:
            assert [info.state for info in client.connections] == [ConnectionState.ACTIVE]
            streamed.read()
        assert_pool_clean(client)
        assert len(client.connections) == 1


def test_sync_client_pin_waits_for_the_busy_connection(server: LoopbackServer) -> None:
    with ExSyncClient() as client:
        other = client.get(server.url + "/")  # connection 1, idle
        with client.stream("GET", server.url + "/") as held:  # takes connection 1
            pinned_id = held.extensions[CONN_ID]
            assert pinned_id == other.extensions[CONN_ID]
            got: list[httpx.Response] = []
            waiter = threading.Thread(
                target=lambda: got.append(
                    client.get(server.url + "/", extensions={CONN_ID: pinned_id})
                )
            )
            waiter.start()
            while client._transport.pool.waiting == 0:  # type: ignore[attr-defined]
                waiter.join(0.01)
            assert not got  # waiting for connection 1, not opening another
            held.read()
        waiter.join(10)
        assert [r.extensions[CONN_ID] for r in got] == [pinned_id]
        assert len(client.connections) == 1
        assert_pool_clean(client)


def test_sync_client_pin_to_unknown_connection_warns_and_falls_back(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    with ExSyncClient() as client, caplog.at_level(logging.WARNING, "httpx_extensions.pool"):
        response = client.get(server.url + "/", extensions={CONN_ID: 987654})
        assert response.status_code == 200
    assert "conn_id 987654 is not open" in caplog.text


def test_sync_client_partitions_never_share_a_connection(server: LoopbackServer) -> None:
    with ExSyncClient() as client:
        a = client.get(server.url + "/", extensions={PARTITION: "a"})
        b = client.get(server.url + "/", extensions={PARTITION: "b"})
        none = client.get(server.url + "/")
        assert len({a.extensions[CONN_ID], b.extensions[CONN_ID], none.extensions[CONN_ID]}) == 3


# Threads.


def test_sync_client_16_threads_share_10_connections(server: LoopbackServer) -> None:
    with ExSyncClient(limits=httpx.Limits(max_connections=10), timeout=30) as client:
        responses = in_threads(1000, 16, lambda _: client.get(server.url + "/"))
        assert [r.status_code for r in responses] == [200] * 1000
        assert len({r.extensions[CONN_ID] for r in responses}) <= 10
        assert len(client.connections) <= 10
        assert client._transport.pool.waiting == 0  # type: ignore[attr-defined]
        assert_pool_clean(client)


def test_sync_client_one_freed_connection_wakes_one_waiter(server: LoopbackServer) -> None:
    with ExSyncClient(limits=httpx.Limits(max_connections=1), timeout=30) as client:
        pool = client._transport.pool  # type: ignore[attr-defined]
        done: list[int] = []
        with client.stream("GET", server.url + "/") as held:
            threads = [
                threading.Thread(
                    target=lambda: done.append(client.get(server.url + "/").status_code)
                )
                for _ in range(5)
            ]
            for thread in threads:
                thread.start()
            while pool.waiting < 5:
                threads[0].join(0.01)
            held.read()
        for thread in threads:
            thread.join(10)
        assert done == [200] * 5
        assert len(client.connections) == 1
        assert_pool_clean(client)


def test_sync_client_pool_timeout_while_another_thread_holds_the_connection(
    server: LoopbackServer,
) -> None:
    timeout = httpx.Timeout(10, pool=0.2)
    with ExSyncClient(limits=httpx.Limits(max_connections=1), timeout=timeout) as client:
        with client.stream("GET", server.url + "/"):
            errors: list[BaseException] = []

            def attempt() -> None:
                try:
                    client.get(server.url + "/")
                except httpx.PoolTimeout as exc:
                    errors.append(exc)

            thread = threading.Thread(target=attempt)
            thread.start()
            thread.join(10)
            assert len(errors) == 1
        assert client._transport.pool.waiting == 0  # type: ignore[attr-defined]
        assert_pool_clean(client)


def test_sync_client_exception_in_a_thread_releases_its_reservations(
    server: LoopbackServer,
) -> None:
    class Boom(Exception):
        pass

    def hook(response: httpx.Response) -> None:
        if response.request.url.path == "/boom":
            response.read()  # the connection is now RESERVED to this send()
            raise Boom

    with ExSyncClient(event_hooks={"response": [hook]}) as client:

        def work(i: int) -> int:
            try:
                return client.get(server.url + ("/boom" if i % 3 == 0 else "/")).status_code
            except Boom:
                return -1

        results = in_threads(300, 16, work)
        assert results.count(-1) == 100
        assert results.count(200) == 200
        assert_pool_clean(client)


# NTLM from threads.


def test_sync_client_ntlm_2000_requests_from_16_threads_one_round_trip_each(
    iis: IISLikeServer,
) -> None:
    auth = NTLMAuth(*ALICE)
    with ExSyncClient(limits=httpx.Limits(max_connections=10), timeout=30) as client:
        responses = in_threads(2000, 16, lambda _: client.get(iis.url + "/data", auth=auth))
        assert [r.status_code for r in responses] == [200] * 2000
        assert {r.json()["user"] for r in responses} == {"EXAMPLE\\alice"}
        assert iis.max_open_connections <= 10
        assert iis.requests_total / 2000 <= 1.05, iis.requests_total
        assert iis.handshakes_completed == iis.connections_opened
        assert_pool_clean(client)


def test_sync_client_ntlm_identities_never_cross_between_threads(iis: IISLikeServer) -> None:
    alice, bob = NTLMAuth(*ALICE), NTLMAuth(*BOB)
    with ExSyncClient(limits=httpx.Limits(max_connections=6), timeout=30) as client:

        def work(i: int) -> tuple[str, str, int]:
            auth, name = (alice, "EXAMPLE\\alice") if i % 2 else (bob, "EXAMPLE\\bob")
            response = client.get(iis.url + "/data", auth=auth)
            return name, response.json()["user"], response.extensions[CONN_ID]

        results = in_threads(400, 16, work)
        assert all(expected == got for expected, got, _ in results)
        alice_conns = {conn for name, _, conn in results if name == "EXAMPLE\\alice"}
        bob_conns = {conn for name, _, conn in results if name == "EXAMPLE\\bob"}
        assert not alice_conns & bob_conns
        assert_pool_clean(client)


def test_sync_client_ntlm_wrong_password_returns_the_401_once(iis: IISLikeServer) -> None:
    with ExSyncClient() as client:
        response = client.get(iis.url + "/", auth=NTLMAuth("EXAMPLE\\alice", "wrong"))
        assert response.status_code == 401
        assert iis.requests_total == 3  # anonymous, type 1, type 3: no retry loop
        assert_pool_clean(client)


def test_sync_client_ntlm_on_stock_httpx_client_authenticates(iis: IISLikeServer) -> None:
    # One thread, stock pool: the handshake's legs happen to share the connection.
    with httpx.Client() as client:
        response = client.get(iis.url + "/data", auth=NTLMAuth(*ALICE))
        assert response.status_code == 200
        assert response.json()["user"] == "EXAMPLE\\alice"


# The sync pool itself, hammered: decisions under one lock.


class _FakeConnection:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def has_expired(self) -> bool:
        return False

    def is_idle(self) -> bool:
        return not self.closed

    def is_closed(self) -> bool:
        return self.closed


def test_sync_pool_hands_each_connection_to_one_thread_at_a_time() -> None:
    import sys

    import httpcore

    from httpx_extensions._sync._pool import ConnectionPool

    pool = ConnectionPool(lambda origin, request: _FakeConnection(), max_connections=3)
    origin = httpcore.Origin(b"http", b"example.test", 80)
    held: set[int] = set()
    crossed: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(1500):
                conn = pool.acquire(None, origin, timeout=30)
                if conn.conn_id in held:
                    crossed.append(conn.conn_id)
                held.add(conn.conn_id)
                held.discard(conn.conn_id)
                pool.release(conn)
        except BaseException as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
    try:
        threads = [threading.Thread(target=work) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert crossed == []
    assert len(pool.connections) <= 3
    assert pool.waiting == 0
    assert {info.state for info in pool.connections} <= {ConnectionState.IDLE}


def test_sync_client_ntlm_preemptive_first_token_on_a_new_connection(iis: IISLikeServer) -> None:
    with ExSyncClient() as client:
        response = client.get(iis.url + "/", auth=NTLMAuth(*ALICE, preemptive=True))
        assert response.status_code == 200
        assert response.json()["user"] == "EXAMPLE\\alice"
        assert iis.requests_total == 2  # type 1 with the first request, then type 3
        assert_pool_clean(client)
