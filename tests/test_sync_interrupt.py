"""ExSyncClient when a thread is interrupted: a KeyboardInterrupt (or any BaseException) from an
event hook, a request body or a real SIGINT, mid-request and mid-NTLM handshake; a streamed
response closed from another thread; ``client.close()`` while threads wait for a connection.

Each time, what the interrupted flow held is given back: no connection stays ACTIVE or
RESERVED, a connection left mid-message is not reused, nothing waits forever, and the next
request works. Real threads, real loopback servers (the IIS-like one for NTLM)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from httpx_extensions import CONN_ID, ConnectionState, ExSyncClient, NTLMAuth, PoolClosed

from .servers import IISLikeServer, LoopbackServer, write_user_file
from .test_sync_client import ALICE, USERS, assert_pool_clean, in_threads


class Interrupted(BaseException):
    """A BaseException that is neither KeyboardInterrupt nor SystemExit (gevent's, trio's)."""


INTERRUPTS = [KeyboardInterrupt, SystemExit, Interrupted]


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("interrupt") / "users.txt", USERS)


@pytest.fixture
def iis_per_request(user_file: Path) -> Iterator[IISLikeServer]:
    # Every request a full handshake: every request can be interrupted mid-handshake.
    with IISLikeServer(user_file=user_file, auth_per_request=True) as server:
        yield server


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


def is_challenge(response: httpx.Response) -> bool:
    """A 401 that carries a token: the middle of a handshake (NTLM type 2)."""
    return response.status_code == 401 and any(
        " " in value for value in response.headers.get_list("WWW-Authenticate")
    )


def waiting(client: ExSyncClient) -> int:
    return int(client._transport.pool.waiting)  # type: ignore[attr-defined]


def wait_until_waiting(client: ExSyncClient, n: int, thread: threading.Thread) -> None:
    while waiting(client) < n:
        assert thread.is_alive() or waiting(client) >= n
        thread.join(0.01)


class RaisingBody(httpx.SyncByteStream):
    """A request body that raises ``error`` part-way through its ``fail_on``-th pass (each
    auth leg sends the body again)."""

    def __init__(self, error: type[BaseException], fail_on: int) -> None:
        self.error = error
        self.fail_on = fail_on
        self.passes = 0

    def __iter__(self) -> Iterator[bytes]:
        self.passes += 1
        yield b"x" * 1000
        if self.passes == self.fail_on:
            raise self.error
        yield b"y" * 1000


# Interrupted by the caller's own code: event hooks, request bodies.


@pytest.mark.parametrize("error", INTERRUPTS)
def test_sync_interrupt_mid_ntlm_handshake_from_threads_releases_the_flow(
    iis_per_request: IISLikeServer, error: type[BaseException]
) -> None:
    def hook(response: httpx.Response) -> None:
        if response.request.headers.get("X-Interrupt") and is_challenge(response):
            raise error  # the connection is RESERVED to this send(), the handshake half done

    auth = NTLMAuth(*ALICE)
    limits = httpx.Limits(max_connections=4)
    with ExSyncClient(limits=limits, timeout=30, event_hooks={"response": [hook]}) as client:

        def work(i: int) -> str:
            headers = {"X-Interrupt": "1"} if i % 3 == 0 else {}
            try:
                response = client.get(iis_per_request.url + "/", auth=auth, headers=headers)
            except error:
                return "interrupted"
            return str(response.json()["user"])

        results = in_threads(120, 16, work)
        assert results.count("interrupted") == 40
        assert results.count("EXAMPLE\\alice") == 80
        assert waiting(client) == 0
        assert_pool_clean(client)
        # Every one of the four connections is usable again, by this identity or another.
        after = in_threads(8, 4, lambda _: client.get(iis_per_request.url + "/", auth=auth))
        assert [r.status_code for r in after] == [200] * 8
        assert_pool_clean(client)
    assert iis_per_request.max_open_connections <= 4


@pytest.mark.parametrize("error", INTERRUPTS)
def test_sync_interrupt_in_a_request_body_closes_the_half_sent_connection(
    server: LoopbackServer, error: type[BaseException]
) -> None:
    with ExSyncClient() as client:
        first = client.get(server.url + "/")
        with pytest.raises(error):
            client.post(server.url + "/echo", content=RaisingBody(error, fail_on=1))
        assert_pool_clean(client)
        # Half a request went out on connection 1: it must not carry the next one.
        assert [info.state for info in client.connections] in ([], [ConnectionState.CLOSED])
        after = client.get(server.url + "/")
        assert after.status_code == 200
        assert after.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert after.headers["X-Conn-Seq"] == "2"
        assert_pool_clean(client)


def test_sync_interrupt_before_the_last_ntlm_leg_goes_out_from_threads(
    iis_per_request: IISLikeServer,
) -> None:
    # A request hook raises as the type 3 leg is about to go out on the reserved connection
    # (the request body was read into memory before the first leg, so it cannot raise there).
    def hook(request: httpx.Request) -> None:
        authorization = request.headers.get("Authorization", "")
        if request.headers.get("X-Interrupt") and authorization.startswith("NTLM TlRMTVNTUAAD"):
            raise KeyboardInterrupt

    auth = NTLMAuth(*ALICE)
    limits = httpx.Limits(max_connections=3)
    with ExSyncClient(limits=limits, timeout=30, event_hooks={"request": [hook]}) as client:

        def work(i: int) -> int:
            headers = {"X-Interrupt": "1"} if i % 2 else {}
            try:
                return client.post(
                    iis_per_request.url + "/", auth=auth, content=b"z" * 5000, headers=headers
                ).status_code
            except KeyboardInterrupt:
                return -1

        results = in_threads(60, 8, work)
        assert results.count(-1) == 30
        assert results.count(200) == 30
        assert_pool_clean(client)
        assert client.get(iis_per_request.url + "/", auth=auth).status_code == 200
        assert_pool_clean(client)
    # The interrupted legs never went out: type 3 only for the 30 good requests and the last.
    assert len([r for r in iis_per_request.log if r.ntlm_message == 3]) == 31
    assert iis_per_request.max_open_connections <= 3


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill (POSIX)")
def test_sync_interrupt_ctrl_c_while_blocked_reading_the_response(server: LoopbackServer) -> None:
    # What Ctrl-C does: SIGINT lands while the main thread is blocked in recv() on the socket.
    main = threading.main_thread()
    assert threading.current_thread() is main
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with ExSyncClient(timeout=30) as client:
            first = client.get(server.url + "/")

            def press_ctrl_c() -> None:
                while [info.state for info in client.connections] != [ConnectionState.ACTIVE]:
                    threading.Event().wait(0.01)
                threading.Event().wait(0.2)  # let the request reach recv()
                assert main.ident is not None
                signal.pthread_kill(main.ident, signal.SIGINT)

            presser = threading.Thread(target=press_ctrl_c)
            presser.start()
            with pytest.raises(KeyboardInterrupt):
                client.get(server.url + "/slow?delay=20")
            presser.join(10)
            assert_pool_clean(client)
            after = client.get(server.url + "/")
            assert after.status_code == 200
            assert after.extensions[CONN_ID] != first.extensions[CONN_ID]  # not the cut one
            assert_pool_clean(client)
    finally:
        signal.signal(signal.SIGINT, previous)


# Streamed responses closed from another thread.


def test_sync_interrupt_stream_closed_from_another_thread_frees_the_connection(
    server: LoopbackServer,
) -> None:
    with ExSyncClient(limits=httpx.Limits(max_connections=1), timeout=30) as client:
        request = client.build_request("GET", server.url + "/stream?chunks=200&delay=0.01")
        opened: list[httpx.Response] = []
        opener = threading.Thread(target=lambda: opened.append(client.send(request, stream=True)))
        opener.start()
        opener.join(10)
        (response,) = opened
        # Part of the body read, the rest still coming. The iterator is kept: httpx2 closes
        # the response when an unfinished iter_raw() is garbage-collected.
        body = response.iter_raw()
        next(body)
        got: list[int] = []
        waiter = threading.Thread(
            target=lambda: got.append(client.get(server.url + "/").status_code)
        )
        waiter.start()
        wait_until_waiting(client, 1, waiter)
        assert not got  # the only connection is the stream's
        closer = threading.Thread(target=response.close)
        closer.start()
        closer.join(10)
        waiter.join(10)
        assert got == [200]
        assert waiting(client) == 0
        assert_pool_clean(client)


def test_sync_interrupt_ntlm_stream_closed_from_another_thread_ends_the_flow(
    iis: IISLikeServer,
) -> None:
    auth = NTLMAuth(*ALICE)
    with ExSyncClient(limits=httpx.Limits(max_connections=1), timeout=30) as client:
        request = client.build_request("GET", iis.url + "/data")
        opened: list[httpx.Response] = []
        opener = threading.Thread(
            target=lambda: opened.append(client.send(request, auth=auth, stream=True))
        )
        opener.start()
        opener.join(10)
        (response,) = opened
        assert response.status_code == 200
        held = response.extensions[CONN_ID]
        got: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: got.append(client.get(iis.url + "/", auth=auth)))
        waiter.start()
        wait_until_waiting(client, 1, waiter)
        closer = threading.Thread(target=response.close)
        closer.start()
        closer.join(10)
        waiter.join(10)
        assert [(r.status_code, r.extensions[CONN_ID]) for r in got] == [(200, held)]
        assert_pool_clean(client)
    assert iis.handshakes_completed == 1  # the waiter reused the authenticated connection


# client.close() while threads wait.


def test_sync_interrupt_close_while_threads_wait_fails_them_clearly(
    server: LoopbackServer,
) -> None:
    client = ExSyncClient(limits=httpx.Limits(max_connections=1), timeout=30)
    response = client.send(client.build_request("GET", server.url + "/"), stream=True)
    held = response.extensions[CONN_ID]
    errors: list[BaseException] = []

    def wait(extensions: dict[str, object]) -> None:
        try:
            client.get(server.url + "/", extensions=extensions)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wait, args=({},)) for _ in range(4)]
    threads.append(threading.Thread(target=wait, args=({CONN_ID: held},)))  # a pin waits too
    for thread in threads:
        thread.start()
    wait_until_waiting(client, 5, threads[0])
    closer = threading.Thread(target=client.close)
    closer.start()
    closer.join(10)
    for thread in threads:
        thread.join(10)
    assert not closer.is_alive()
    assert not any(thread.is_alive() for thread in threads)
    assert len(errors) == 5
    assert all(isinstance(exc, PoolClosed) for exc in errors), errors
    assert all("closed while this request waited" in str(exc) for exc in errors)
    assert [info.state for info in client.connections] in ([], [ConnectionState.CLOSED])
    response.close()  # the stream's connection was closed under it: closing it is harmless
    with pytest.raises(RuntimeError, match="closed"):
        client.get(server.url + "/")
