"""ExClient against real loopback servers, under asyncio and trio."""

from __future__ import annotations

import gc
import json
import logging
import pathlib
import socket
import threading
import time
import tracemalloc

import anyio
import httpx
import pytest
import trustme

from httpx_extensions import (
    CONN_ID,
    ConnectionState,
    ExClient,
    ExTransport,
    PoolTimeout,
    UnsupportedConfiguration,
)

from .authflows import NonceAuth, SlowNonceAuth
from .conftest import assert_pool_clean, settled
from .servers import LoopbackServer

pytestmark = pytest.mark.anyio


def conn_seq(response: httpx.Response) -> int:
    """The server's serial number of the TCP connection a response came on."""
    return int(response.headers["X-Conn-Seq"])


async def gather(n: int, fn, *args, **kwargs) -> list:  # type: ignore[no-untyped-def]
    """Run ``fn(*args, **kwargs)`` n times concurrently; results in start order."""
    results: list = [None] * n

    async def run(i: int) -> None:
        results[i] = await fn(*args, **kwargs)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(run, i)
    return results


# conn_id and pins.


async def test_client_conn_id_on_every_response_and_unique(server: LoopbackServer) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=5)) as client:
        responses = await gather(40, client.get, server.url + "/")
        ids = {r.extensions[CONN_ID] for r in responses}
        assert all(isinstance(r.extensions[CONN_ID], int) for r in responses)
        # One conn_id per TCP connection, and the ids the pool shows are those ids.
        assert len(ids) == server.connections_opened == len({conn_seq(r) for r in responses})
        assert ids == {info.conn_id for info in client.connections}
        for r in responses:
            assert f"conn_id={r.extensions[CONN_ID]}" in repr(
                client._transport.pool._conns[r.extensions[CONN_ID]]
            )
        assert_pool_clean(client)


async def test_client_pin_honoured(server: LoopbackServer) -> None:
    async with ExClient() as client:
        first = await client.get(server.url + "/")
        others = await gather(5, client.get, server.url + "/")  # open a few more connections
        assert server.connections_opened > 1
        pinned = [
            await client.get(server.url + "/", extensions={CONN_ID: first.extensions[CONN_ID]})
            for _ in range(10)
        ]
        assert {r.extensions[CONN_ID] for r in pinned} == {first.extensions[CONN_ID]}
        assert {conn_seq(r) for r in pinned} == {conn_seq(first)}
        # Without the pin the pool had other idle connections to choose from.
        assert [r.status_code for r in others] == [200] * 5
        assert {r.extensions[CONN_ID] for r in others} - {first.extensions[CONN_ID]}
        assert_pool_clean(client)


async def test_client_pin_to_busy_connection_waits(server: LoopbackServer) -> None:
    async with ExClient() as client:
        busy = await client.send(
            client.build_request("GET", server.url + "/stream?chunks=2&size=10"), stream=True
        )
        conn_id = busy.extensions[CONN_ID]
        done = anyio.Event()
        result: list[httpx.Response] = []

        async def pinned() -> None:
            result.append(await client.get(server.url + "/", extensions={CONN_ID: conn_id}))
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pinned)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set(), "the pinned request did not wait for its busy connection"
            assert client._transport.pool.waiting == 1
            await busy.aread()
            await busy.aclose()
        assert result[0].extensions[CONN_ID] == conn_id
        assert conn_seq(result[0]) == conn_seq(busy)
        assert server.connections_opened == 1
        assert_pool_clean(client)


async def test_client_pin_to_closed_connection_warns_and_falls_back(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with ExClient() as client:
        closing = await client.get(server.url + "/close")
        gone = closing.extensions[CONN_ID]
        with caplog.at_level(logging.WARNING, logger="httpx_extensions"):
            response = await client.get(server.url + "/", extensions={CONN_ID: gone})
            unknown = await client.get(server.url + "/", extensions={CONN_ID: 10**9})
        assert response.status_code == unknown.status_code == 200
        assert response.extensions[CONN_ID] != gone
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert str(gone) in warnings[0].getMessage()
        assert "closed or unknown" in warnings[0].getMessage()
        assert str(10**9) in warnings[1].getMessage()
        assert_pool_clean(client)


async def test_client_pin_to_expired_connection_warns_and_falls_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with LoopbackServer(idle_timeout=0.1) as server:
        async with ExClient() as client:
            first = await client.get(server.url + "/")
            await settled(lambda: server.open_connections == 0)  # it closed the idle one
            with caplog.at_level(logging.WARNING, logger="httpx_extensions"):
                again = await client.get(
                    server.url + "/", extensions={CONN_ID: first.extensions[CONN_ID]}
                )
            assert again.status_code == 200
            assert again.extensions[CONN_ID] != first.extensions[CONN_ID]
            assert "expired" in caplog.records[-1].getMessage()
            assert_pool_clean(client)


async def test_client_pin_must_be_an_int(server: LoopbackServer) -> None:
    async with ExClient() as client:
        with pytest.raises(TypeError, match=r"extensions\['conn_id'\] must be the int"):
            await client.get(server.url + "/", extensions={CONN_ID: "1"})
        assert_pool_clean(client)


# Connection-bound handshakes.


@pytest.mark.parametrize("copy_conn_id", [True, False], ids=["copies-conn-id", "no-conn-id"])
async def test_client_500_connection_bound_handshakes_through_4_connections(
    server: LoopbackServer, copy_conn_id: bool
) -> None:
    auth = NonceAuth("alice", copy_conn_id=copy_conn_id)
    async with ExClient(limits=httpx.Limits(max_connections=4), timeout=30) as client:
        responses = await gather(500, client.get, server.url + "/auth", auth=auth)
        assert [r.status_code for r in responses] == [200] * 500
        assert {r.json()["user"] for r in responses} == {"alice"}
        assert server.max_open_connections <= 4
        # Connections stay authenticated: far fewer handshakes than requests.
        handshakes = sum(r.json()["handshake"] for r in responses)
        assert handshakes <= server.connections_opened
        assert_pool_clean(client)


async def test_client_queueing_two_connections_three_flows(server: LoopbackServer) -> None:
    """The seed's diagram: 2 connections, 3 auth flows; the third waits for a whole flow."""
    auth = SlowNonceAuth("alice", pause=0.05)
    async with ExClient(limits=httpx.Limits(max_connections=2)) as client:
        responses = await gather(3, client.get, server.url + "/auth", auth=auth)
    assert [r.status_code for r in responses] == [200, 200, 200]
    log = server.log
    by_conn: dict[int, list] = {}
    for record in log:
        by_conn.setdefault(record.conn_seq, []).append(record)
    assert len(by_conn) == 2
    # Two flows ran their 3 legs each on their own connection; the third flow's request came
    # only after a whole flow had finished on that connection, with no interleaving.
    finals = sorted((r for r in log if r.status == 200), key=lambda r: r.finished)
    legs = sorted(log, key=lambda r: r.started)
    assert [r.status for r in legs[:6]].count(200) == 2
    third_flow_start = legs[6].started
    assert third_flow_start >= finals[0].finished
    per_conn = sorted(
        (sorted(records, key=lambda r: r.started) for records in by_conn.values()), key=len
    )
    # The connection that carried two flows was authenticated by the first: the second is
    # one request, and it began only after the first had finished (its 200 was written).
    assert [[r.status for r in records] for records in per_conn] == [
        [401, 401, 200],
        [401, 401, 200, 200],
    ]
    shared = per_conn[1]
    assert shared[3].started >= shared[2].finished
    assert server.connections_opened == 2


async def test_client_partitions_isolate_identities(server: LoopbackServer) -> None:
    users = ["alice", "bob", "zoë"]
    async with ExClient(limits=httpx.Limits(max_connections=6), timeout=30) as client:

        async def as_user(user: str) -> tuple[str, httpx.Response]:
            return user, await client.get(server.url + "/auth", auth=NonceAuth(user))

        async def anonymous() -> tuple[None, httpx.Response]:
            return None, await client.get(server.url + "/auth")

        results: list = []

        async def run(fn, *args) -> None:  # type: ignore[no-untyped-def]
            results.append(await fn(*args))

        async with anyio.create_task_group() as tg:
            for i in range(150):
                if i % 4 == 3:
                    tg.start_soon(run, anonymous)
                else:
                    tg.start_soon(run, as_user, users[i % 3])
    for user, response in results:
        if user is None:
            # An anonymous request never lands on an authenticated connection.
            assert response.status_code == 401
        else:
            assert response.status_code == 200
            assert response.json()["user"] == user
    assert all(u in (None, *users) for u in server.connection_users().values())


# Redirects.


async def test_client_same_origin_redirects_stay_on_the_flow_connection(
    server: LoopbackServer,
) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=3), follow_redirects=True) as client:
        url = server.url + "/redirect?to=/redirect%3Fto%3D/echo"
        responses = await gather(60, client.get, url)
        for response in responses:
            assert response.status_code == 200
            assert len(response.history) == 2
            hops = {conn_seq(r) for r in (*response.history, response)}
            assert len(hops) == 1, "a same-origin redirect changed connection"
            assert {r.extensions[CONN_ID] for r in (*response.history, response)} == {
                response.extensions[CONN_ID]
            }
        assert_pool_clean(client)


async def test_client_cross_origin_redirect_gets_a_connection_to_the_right_host(
    server: LoopbackServer, other_server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with ExClient(follow_redirects=True, limits=httpx.Limits(max_connections=1)) as client:
        warm = await client.get(server.url + "/")
        with caplog.at_level(logging.WARNING, logger="httpx_extensions"):
            response = await client.get(
                server.url + f"/redirect?to={other_server.url}/echo",
                extensions={CONN_ID: warm.extensions[CONN_ID]},  # copied onto the hop by httpx
            )
        assert response.status_code == 200
        assert response.url == httpx.URL(other_server.url + "/echo")
        assert other_server.requests_total == 1
        assert response.extensions[CONN_ID] != warm.extensions[CONN_ID]
        assert [i.origin for i in client.connections] == [f"{other_server.url}"]
        assert caplog.records == []
        assert_pool_clean(client)


async def test_client_flow_needing_a_second_origin_in_a_full_pool_does_not_deadlock(
    server: LoopbackServer, other_server: LoopbackServer
) -> None:
    async with ExClient(follow_redirects=True, limits=httpx.Limits(max_connections=2)) as client:
        url = server.url + f"/redirect?to={other_server.url}/redirect%3Fto%3D{server.url}/"
        with anyio.fail_after(20):
            responses = await gather(6, client.get, url)
        assert [r.status_code for r in responses] == [200] * 6
        assert_pool_clean(client)


# Streaming.


async def test_client_stream_holds_connection_until_closed(server: LoopbackServer) -> None:
    async with ExClient() as client:
        async with client.stream("GET", server.url + "/stream?chunks=3&size=100") as response:
            states = [i.state for i in client.connections]
            assert states == [ConnectionState.ACTIVE]
            body = await response.aread()
        assert body == b"x" * 300
        assert [i.state for i in client.connections] == [ConnectionState.IDLE]
        again = await client.get(server.url + "/")
        assert again.extensions[CONN_ID] == response.extensions[CONN_ID]


async def test_client_stream_closed_early_without_reading(server: LoopbackServer) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        async with client.stream("GET", server.url + "/stream?chunks=50&size=1000&delay=0.01"):
            pass
        assert_pool_clean(client)
        # The half-read connection could not be reused, but the slot came back.
        response = await client.get(server.url + "/", timeout=httpx.Timeout(5, pool=1))
        assert response.status_code == 200
        assert_pool_clean(client)


# Errors, timeouts, cancellation.


async def test_client_read_timeout_leaves_nothing_busy(server: LoopbackServer) -> None:
    async with ExClient() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(server.url + "/slow?delay=2", timeout=0.1)
        assert_pool_clean(client)
        assert (await client.get(server.url + "/")).status_code == 200


async def test_client_connect_error_leaves_nothing_busy() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
            for _ in range(3):
                with pytest.raises(httpx.ConnectError):
                    await client.get(f"http://127.0.0.1:{port}/")
            assert client.connections == []


async def test_client_server_dropping_the_connection(server: LoopbackServer) -> None:
    async with ExClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(server.url + "/drop")
        assert client.connections == []
        assert (await client.get(server.url + "/")).status_code == 200


async def test_client_pool_timeout(server: LoopbackServer) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        async with client.stream("GET", server.url + "/stream?chunks=2&size=1"):
            with pytest.raises(PoolTimeout) as info:
                await client.get(server.url + "/", timeout=httpx.Timeout(5, pool=0.1))
            assert isinstance(info.value, httpx.PoolTimeout)
            assert "pool timeout" in str(info.value)
        assert_pool_clean(client)
        assert client._transport.pool.waiting == 0


async def test_client_pool_timeouts_of_different_lengths_each_fire_on_time(
    server: LoopbackServer,
) -> None:
    # Queued requests share one timer per pool: a short timeout queued behind a long one
    # fires on time, and the long one is not failed when the short one's deadline passes.
    # Ordered by events, not measured: the short one fails while the long one still waits
    # (so its timer did not wait for the long deadline, and did not take the long one along).
    outcomes: dict[str, object] = {}
    short_failed = anyio.Event()

    async def queued(name: str, pool: float) -> None:
        try:
            response = await client.get(server.url + "/", timeout=httpx.Timeout(5, pool=pool))
            outcomes[name] = response.status_code
        except PoolTimeout:
            outcomes[name] = "PoolTimeout"
            short_failed.set()

    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        pool = client._transport.pool
        # Leaving the block closes the streamed response first (the long one gets its
        # connection), then waits for both queued requests.
        async with (
            anyio.create_task_group() as tg,
            client.stream("GET", server.url + "/stream?chunks=2&size=1"),
        ):
            tg.start_soon(queued, "long", 60.0)
            await anyio.wait_all_tasks_blocked()
            assert pool.waiting == 1
            tg.start_soon(queued, "short", 0.2)
            # A hang guard only: the short timeout, fired at the long one's deadline, would
            # take 60 s.
            with anyio.fail_after(30):
                await short_failed.wait()
            assert outcomes == {"short": "PoolTimeout"}  # the long one waits on
            assert pool.waiting == 1
        assert outcomes["long"] == 200
        assert_pool_clean(client)
        assert client._transport.pool.waiting == 0


async def test_client_cancel_while_queued(server: LoopbackServer) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        async with client.stream("GET", server.url + "/stream?chunks=2&size=1") as held:
            with anyio.move_on_after(0.1) as scope:
                await client.get(server.url + "/")
            assert scope.cancelled_caught
            assert client._transport.pool.waiting == 0
            await held.aread()
        assert_pool_clean(client)
        assert (await client.get(server.url + "/")).status_code == 200


async def test_client_cancel_while_waiting_for_response(server: LoopbackServer) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        with anyio.move_on_after(0.2):
            await client.get(server.url + "/hang")
        assert_pool_clean(client)
        assert (await client.get(server.url + "/")).status_code == 200


async def test_client_cancel_while_reading_a_stream(server: LoopbackServer) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        with anyio.move_on_after(0.2):
            async with client.stream(
                "GET", server.url + "/stream?chunks=100&size=10&delay=0.05"
            ) as response:
                async for _ in response.aiter_bytes():
                    pass
        assert_pool_clean(client)
        assert (await client.get(server.url + "/")).status_code == 200


@pytest.mark.parametrize("cancel_after", [0.05, 0.15], ids=["after-leg-0", "after-leg-1"])
async def test_client_cancel_mid_handshake_releases_the_reservation(
    server: LoopbackServer, cancel_after: float
) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        with anyio.move_on_after(cancel_after) as scope:
            await client.get(server.url + "/auth", auth=SlowNonceAuth("alice", pause=0.1))
        assert scope.cancelled_caught
        assert_pool_clean(client)
        # The single slot is usable at once: nothing was left reserved.
        response = await client.get(
            server.url + "/auth", auth=NonceAuth("alice"), timeout=httpx.Timeout(5, pool=1)
        )
        assert response.status_code == 200


async def test_client_error_in_auth_flow_releases_the_reservation(server: LoopbackServer) -> None:
    class Broken(NonceAuth):
        def auth_flow(self, request):  # type: ignore[no-untyped-def]
            yield request
            raise RuntimeError("auth blew up between legs")

    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        with pytest.raises(RuntimeError, match="blew up"):
            await client.get(server.url + "/auth", auth=Broken("alice"))
        assert_pool_clean(client)
        response = await client.get(server.url + "/", timeout=httpx.Timeout(5, pool=1))
        assert response.status_code == 200


# Limits.


async def test_client_max_connections_never_exceeded(server: LoopbackServer) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=5)) as client:
        responses = await gather(300, client.get, server.url + "/slow?delay=0.001")
    assert all(r.status_code == 200 for r in responses)
    assert server.max_open_connections <= 5
    assert server.connections_opened <= 5


async def test_client_keepalive_expiry_closes_idle_connections(server: LoopbackServer) -> None:
    # The pool's clock is the test's: how fast this machine runs does not decide which
    # request finds the connection expired.
    now = [1000.0]
    limits = httpx.Limits(keepalive_expiry=0.2)
    async with ExClient(limits=limits) as client:
        client._transport.pool._clock = lambda: now[0]  # type: ignore[attr-defined]
        first = await client.get(server.url + "/")
        now[0] += 0.19
        second = await client.get(server.url + "/")
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]
        now[0] += 0.21
        third = await client.get(server.url + "/")
        assert third.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert server.connections_opened == 2
        assert [i.conn_id for i in client.connections] == [third.extensions[CONN_ID]]


async def test_client_max_keepalive_bounds_idle_connections(server: LoopbackServer) -> None:
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=3)
    async with ExClient(limits=limits) as client:
        await gather(10, client.get, server.url + "/slow?delay=0.05")
        idle = [i for i in client.connections if i.state is ConnectionState.IDLE]
        assert len(idle) == 3
    await settled(lambda: server.open_connections == 0)  # the client closed everything on exit


async def test_client_server_closing_idle_connection_is_not_reused() -> None:
    with LoopbackServer(idle_timeout=0.1) as server:
        async with ExClient() as client:
            for _ in range(3):
                assert (await client.get(server.url + "/")).status_code == 200
                await settled(lambda: server.open_connections == 0)  # closed while idle
            assert server.connections_opened == 3


# TLS and proxies.


async def test_client_https(https_server: LoopbackServer, client_ssl_context) -> None:  # type: ignore[no-untyped-def]
    async with ExClient(verify=client_ssl_context) as client:
        responses = [await client.get(https_server.url + "/") for _ in range(3)]
        assert {r.extensions[CONN_ID] for r in responses} == {responses[0].extensions[CONN_ID]}
        assert responses[0].extensions["network_stream"].get_extra_info("ssl_object") is not None
        assert https_server.connections_opened == 1
    del responses
    gc.collect()  # a TLS socket left unclosed would raise ResourceWarning (an error) here


@pytest.mark.parametrize("trust_env", [True, False])
async def test_client_default_verification_reads_ssl_cert_file_as_httpx(
    https_server: LoopbackServer,
    ca: trustme.CA,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    trust_env: bool,
) -> None:
    # The default context is built on the first TLS connection, from the CA bundle chosen
    # when the client was made: SSL_CERT_FILE when trust_env, as httpx.create_ssl_context.
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    client = ExClient(trust_env=trust_env)
    monkeypatch.delenv("SSL_CERT_FILE")  # read at construction, not at the first connection
    async with client:
        if trust_env:
            assert (await client.get(https_server.url + "/")).status_code == 200
        else:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(https_server.url + "/")
        assert_pool_clean(client)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_bad_ssl_cert_file_fails_at_construction_as_httpx(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(OSError) as stock:
        httpx.AsyncClient()
    with pytest.raises(type(stock.value)):
        ExClient()
    async with ExClient(trust_env=False):  # the environment ignored: certifi's bundle
        pass


async def test_client_https_rejects_an_untrusted_certificate(https_server: LoopbackServer) -> None:
    async with ExClient() as client:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(https_server.url + "/")
        assert client.connections == []


async def test_client_forward_proxy(server: LoopbackServer, proxy) -> None:  # type: ignore[no-untyped-def]
    async with ExClient(proxy=proxy.url, limits=httpx.Limits(max_connections=2)) as client:
        responses = await gather(20, client.get, server.url + "/auth", auth=NonceAuth("alice"))
        assert [r.status_code for r in responses] == [200] * 20
        assert proxy.forwarded_requests[0] == server.url + "/auth"
        assert proxy.connections_opened <= 2
        assert_pool_clean(client)


async def test_client_connect_tunnel(
    https_server: LoopbackServer, proxy, client_ssl_context
) -> None:  # type: ignore[no-untyped-def]
    async with ExClient(proxy=proxy.url, verify=client_ssl_context) as client:
        responses = [await client.get(https_server.url + "/") for _ in range(3)]
        assert [r.status_code for r in responses] == [200] * 3
        assert proxy.connect_requests == [f"127.0.0.1:{https_server.port}"]
        assert len({r.extensions[CONN_ID] for r in responses}) == 1


async def test_client_proxy_credentials(
    server: LoopbackServer, https_server: LoopbackServer, client_ssl_context
) -> None:  # type: ignore[no-untyped-def]
    from .servers import LoopbackProxy

    with LoopbackProxy(auth=("user", "pass")) as proxy:
        authed = proxy.url.replace("http://", "http://user:pass@")
        async with ExClient(proxy=authed, verify=client_ssl_context) as client:
            assert (await client.get(server.url + "/")).status_code == 200
            assert (await client.get(https_server.url + "/")).status_code == 200
        async with ExClient(proxy=proxy.url, verify=client_ssl_context) as client:
            # A final 407 is an error for forward proxying too (docs/proxies.md).
            with pytest.raises(httpx.ProxyError, match="407"):
                await client.get(server.url + "/")
            with pytest.raises(httpx.ProxyError, match="407"):
                await client.get(https_server.url + "/")
            assert_pool_clean(client)


async def test_client_environment_proxy(server: LoopbackServer, proxy, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with ExClient() as client:
        assert (await client.get(server.url + "/")).status_code == 200
        assert proxy.forwarded_requests == [server.url + "/"]
    async with ExClient(trust_env=False) as client:
        assert (await client.get(server.url + "/")).status_code == 200
        assert len(proxy.forwarded_requests) == 1


# Other transports.


async def test_client_mock_transport() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"path": request.url.path})

    async with ExClient(transport=httpx.MockTransport(handler)) as client:
        response = await client.get("http://example.test/hello")
        assert response.json() == {"path": "/hello"}
        assert CONN_ID not in response.extensions
        assert client.connections == []


async def test_client_mounts_mix_our_pool_and_mock(server: LoopbackServer) -> None:
    mock = httpx.MockTransport(lambda request: httpx.Response(204))
    async with ExClient(mounts={"http://mocked.test": mock}) as client:
        assert (await client.get("http://mocked.test/")).status_code == 204
        real = await client.get(server.url + "/")
        assert real.extensions[CONN_ID] == client.connections[0].conn_id


async def test_client_asgi_transport() -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    async with ExClient(transport=httpx.ASGITransport(app=app)) as client:
        response = await client.get("http://asgi.test/path")
        assert response.text == "/path"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_respx(server: LoopbackServer) -> None:
    import respx

    async with ExClient() as client:
        with respx.mock(assert_all_called=True) as router:
            router.get("http://respx.test/").respond(json={"ok": True})
            assert (await client.get("http://respx.test/")).json() == {"ok": True}
        # Outside the mock, the real pool serves again.
        assert (await client.get(server.url + "/")).extensions[CONN_ID] >= 1


# Drop-in behaviour.


async def test_client_event_hooks_cookies_and_params(server: LoopbackServer) -> None:
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(f"request {request.url.path}")

    async def on_response(response: httpx.Response) -> None:
        seen.append(f"response {response.status_code}")

    async with ExClient(
        event_hooks={"request": [on_request], "response": [on_response]},
        cookies={"session": "abc"},
        params={"q": "1"},
        headers={"X-Test": "yes"},
        base_url=server.url,
    ) as client:
        response = await client.post("/echo", content=b"payload")
        echoed = response.json()
        headers = {k.lower(): v for k, v in echoed["headers"]}
        assert echoed["method"] == "POST"
        assert echoed["path"] == "/echo?q=1"
        assert echoed["body"] == "payload"
        assert headers["cookie"] == "session=abc"
        assert headers["x-test"] == "yes"
        assert seen == ["request /echo", "response 200"]


async def test_client_streaming_request_body(server: LoopbackServer) -> None:
    async def body():  # type: ignore[no-untyped-def]
        for part in (b"one ", b"two ", b"three"):
            yield part

    async with ExClient() as client:
        response = await client.post(server.url + "/echo", content=body())
        assert json.loads(response.text)["body"] == "one two three"


async def test_client_unsupported_url_schemes() -> None:
    async with ExClient() as client:
        with pytest.raises(httpx.UnsupportedProtocol, match="unsupported protocol 'ftp://'"):
            await client.get("ftp://127.0.0.1/")
        with pytest.raises(httpx.UnsupportedProtocol, match="missing an 'http://'"):
            await client.get("//127.0.0.1/")


async def test_client_closed_client_refuses_requests(server: LoopbackServer) -> None:
    client = ExClient()
    await client.get(server.url + "/")
    await client.aclose()
    with pytest.raises(RuntimeError, match="client has been closed"):
        await client.get(server.url + "/")


# What httpx's client adds to each exchange (ExClient does it its own way for its pool).


async def test_client_response_elapsed_log_line_and_error_request(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with ExClient(default_encoding="latin-1") as client:
        with caplog.at_level(logging.INFO, logger="httpx"):
            read = await client.get(server.url + "/slow?delay=0.1")
        assert read.elapsed.total_seconds() >= 0.09
        assert read.encoding == "latin-1"  # no charset in the response: the client's default
        assert read.request.url == server.url + "/slow?delay=0.1"
        lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
        assert lines == [f'HTTP Request: GET {server.url}/slow?delay=0.1 "HTTP/1.1 200 OK"']

        async with client.stream("GET", server.url + "/stream?chunks=3&size=10") as streamed:
            with pytest.raises(RuntimeError, match="elapsed"):
                _ = streamed.elapsed  # as in httpx: known once the response is closed
            await streamed.aread()
        assert streamed.elapsed.total_seconds() > 0

        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get(server.url + "/hang", timeout=0.1)
        assert info.value.request.url == server.url + "/hang"
        assert_pool_clean(client)


async def test_client_response_hook_replacing_the_stream_is_read_through(
    server: LoopbackServer,
) -> None:
    # A hook may wrap response.stream (progress, transformation): reading goes through it.
    class Upper(httpx.AsyncByteStream):
        def __init__(self, inner: httpx.AsyncByteStream) -> None:
            self.inner = inner
            self.seen = 0

        async def __aiter__(self):  # type: ignore[no-untyped-def]
            async for chunk in self.inner:
                self.seen += len(chunk)
                yield chunk.upper()

        async def aclose(self) -> None:
            await self.inner.aclose()

    wrappers: list[Upper] = []

    async def hook(response: httpx.Response) -> None:
        wrapper = Upper(response.stream)  # type: ignore[arg-type]
        wrappers.append(wrapper)
        response.stream = wrapper

    async with ExClient(event_hooks={"response": [hook]}) as client:
        response = await client.get(server.url + "/")
        assert response.content == b"HELLO, WORLD!"
        assert wrappers[0].seen == len(b"hello, world!")
        assert_pool_clean(client)


# Requests built as httpx builds them (ExClient builds bodyless ones its own, faster way).


_BUILD_CLIENTS = [
    {},
    {"base_url": "http://127.0.0.1:8080/api/v1", "headers": {"X-Client": "one", "Accept": "a/b"}},
    {"base_url": "https://[::1]:8443", "timeout": httpx.Timeout(3.0, read=7.0)},
    {"headers": {"Host": "virtual.test", "User-Agent": "mine"}},
]
_BUILD_CALLS = [
    ("GET", "http://127.0.0.1:9000/x?q=1", {}),
    ("get", "/relative/path", {}),
    ("POST", "/no-body", {}),
    (b"post", "/no-body", {}),  # type: ignore[list-item]
    ("put", "/no-body", {"headers": {"Transfer-Encoding": "chunked"}}),
    ("PATCH", "/no-body", {"headers": [("Content-Length", "0"), ("X-A", "1"), ("x-a", "2")]}),
    ("DELETE", "/", {"headers": {"accept": "text/plain"}, "timeout": 1.5}),
    ("OPTIONS", "http://127.0.0.1/", {"timeout": None, "extensions": {"trace": None}}),
    ("HEAD", httpx.URL("http://127.0.0.1:1/h"), {"extensions": {"timeout": {"read": 1.0}}}),
    ("GET", "/", {"params": {"page": "2"}}),
    ("GET", "/", {"cookies": {"session": "s"}}),
    ("POST", "/", {"json": {"a": 1}}),
    ("POST", "/", {"content": b"body"}),
    ("POST", "/", {"data": {"field": "value"}}),
]


@pytest.mark.parametrize("client_kwargs", _BUILD_CLIENTS)
@pytest.mark.parametrize(("method", "url", "kwargs"), _BUILD_CALLS)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_builds_requests_exactly_as_httpx(
    client_kwargs: dict, method: str, url: str | httpx.URL, kwargs: dict
) -> None:
    if client_kwargs.get("base_url") is None and isinstance(url, str) and url.startswith("/"):
        url = "http://127.0.0.1:8000" + url
    async with ExClient(**client_kwargs) as ours, httpx.AsyncClient(**client_kwargs) as stock:
        for cookies in (None, {"jar": "full"}):  # with client cookies httpx's own path is used
            ours.cookies = stock.cookies = cookies or {}
            mine = ours.build_request(method, url, **kwargs)
            theirs = stock.build_request(method, url, **kwargs)
            assert mine.method == theirs.method
            assert mine.url == theirs.url
            assert mine.headers.raw == theirs.headers.raw
            assert mine.extensions == theirs.extensions
            assert mine.content == theirs.content
            assert b"".join([part async for part in mine.stream]) == theirs.content


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_subclass_merge_hooks_are_honoured() -> None:
    class Signed(ExClient):
        def _merge_headers(self, headers=None):  # type: ignore[no-untyped-def]
            merged = httpx.Headers(super()._merge_headers(headers))
            merged["X-Signature"] = "sig"
            return merged

    async with Signed() as client:
        request = client.build_request("GET", "http://127.0.0.1:9/")
        assert request.headers["X-Signature"] == "sig"
    async with ExClient() as plain:
        assert "X-Signature" not in plain.build_request("GET", "http://127.0.0.1:9/").headers


# Bad arguments (no event loop needed, but kept here beside the behaviour they guard).


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"http2": True}, "http2=True is not supported"),
        ({"limits": httpx.Limits(keepalive_expiry=0)}, "keepalive_expiry=0"),
        ({"limits": httpx.Limits(max_keepalive_connections=0)}, "max_keepalive_connections=0"),
        ({"limits": httpx.Limits(max_connections=0)}, "max_connections=0"),
        ({"http1": False}, "HTTP/1.1 only"),
    ],
)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UnsupportedConfiguration, match=message) as info:
        ExClient(**kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_builds_our_transport_through_httpx_hooks(proxy) -> None:  # type: ignore[no-untyped-def]
    """Fails when httpx stops calling ``_init_transport``/``_init_proxy_transport``."""
    client = ExClient(proxy=proxy.url)
    assert isinstance(client._transport, ExTransport)
    assert all(isinstance(t, ExTransport) for t in client._mounts.values())
    assert len(client._mounts) >= 1
    await client.aclose()
    assert isinstance(ExClient(trust_env=False)._transport, ExTransport)


@pytest.fixture
def silent_listener():  # type: ignore[no-untyped-def]
    """A TCP listener that accepts (through the backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"https://127.0.0.1:{sock.getsockname()[1]}/"


async def test_client_connect_timeout_leaves_nothing_busy(silent_listener: str) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        for _ in range(2):  # the slot comes back each time
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(silent_listener, timeout=httpx.Timeout(5, connect=0.1))
        assert client.connections == []


async def test_client_cancel_while_connecting(silent_listener: str) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        with anyio.move_on_after(0.1) as scope:
            await client.get(silent_listener)
        assert scope.cancelled_caught
        assert client.connections == []


async def test_client_cancel_while_sending_the_body(server: LoopbackServer) -> None:
    async def slow_body():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"x" * 10
            await anyio.sleep(0.01)

    body = slow_body()
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        with anyio.move_on_after(0.1) as scope:
            await client.post(server.url + "/echo", content=body)
        assert scope.cancelled_caught
        assert_pool_clean(client)
        assert (await client.get(server.url + "/")).status_code == 200
    await body.aclose()  # the caller's generator is the caller's to close (as with httpx)


async def test_client_large_bodies_both_ways(server: LoopbackServer) -> None:
    """Flow control: a 4 MiB response read slowly, and a 4 MiB upload."""
    async with ExClient() as client:
        async with client.stream("GET", server.url + "/stream?chunks=64&size=65536") as response:
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received < 2 << 20:
                    await anyio.sleep(0.001)  # let the server get ahead of us
        assert received == 64 * 65536
        upload = b"y" * (4 << 20)
        echoed = await client.post(server.url + "/echo", content=upload)
        assert len(echoed.json()["body"]) == len(upload)
        assert_pool_clean(client)


async def test_client_network_stream_extension(server: LoopbackServer) -> None:
    async with ExClient() as client:
        response = await client.get(server.url + "/")
        stream = response.extensions["network_stream"]
        assert stream.get_extra_info("server_addr")[1] == server.port
        assert stream.get_extra_info("client_addr")[0] == "127.0.0.1"
        assert stream.get_extra_info("socket") is not None
        assert stream.get_extra_info("ssl_object") is None
        assert stream.get_extra_info("no such thing") is None
        assert response.extensions["http_version"] == b"HTTP/1.1"


# asyncio only: under trio the transport reads through httpcore's AnyIO backend.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_socket_reads_allocate_no_loop_sized_buffer() -> None:
    # With a plain asyncio.Protocol the loop allocates its max_size (256 KiB on the selector
    # loop) for every socket read, which glibc serves with an mmap, an mremap and an munmap
    # unless something earlier in the process raised its mmap threshold: the httpx2 flavour
    # ran at two thirds of the httpx one's speed. A server thread that allocates nothing per
    # request (recv_into), so what is traced is the client's.
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n" + b"x" * 4096
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        received = bytearray(65536)
        with conn:
            while conn.recv_into(received):  # one request head per read: sequential GETs
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        async with ExClient() as client:
            await client.get(f"http://127.0.0.1:{port}/")  # the connection, and its buffers
            tracemalloc.start()
            try:
                for _ in range(20):
                    response = await client.get(f"http://127.0.0.1:{port}/")
                    assert response.content == b"x" * 4096
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert [c.requests for c in client.connections] == [21]  # one connection
        assert peak < 128 * 1024
    finally:
        listener.close()
        thread.join(5)


# asyncio only: the socket leak it guards was in our asyncio stream; under trio, httpcore leaves
# httpx's request-body generator unexhausted after the write error, and trio warns about that
# for stock httpx as well.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_write_timeout_to_a_peer_that_stops_reading(silent_listener: str) -> None:
    url = silent_listener.replace("https://", "http://")
    async with ExClient() as client:
        with pytest.raises(httpx.WriteTimeout):
            await client.put(url, content=b"z" * (64 << 20), timeout=httpx.Timeout(5, write=0.2))
        assert client.connections == []
    gc.collect()  # the socket with unsent data must be closed, not left to the event loop


async def test_client_slow_reader_of_a_large_https_body(
    https_server: LoopbackServer,
    client_ssl_context,  # type: ignore[no-untyped-def]
) -> None:
    """Flow control under TLS: reading resumes on the socket transport that was paused."""
    async with ExClient(verify=client_ssl_context) as client:
        url = https_server.url + "/stream?chunks=64&size=65536"
        async with client.stream("GET", url, timeout=5) as response:
            await anyio.sleep(0.5)  # let more than the buffer limit arrive
            body = await response.aread()
        assert len(body) == 64 * 65536


async def test_client_send_from_an_event_hook_in_a_full_pool(server: LoopbackServer) -> None:
    """A nested send() may take its parent flow's reservation instead of waiting for it."""

    async def hook(request: httpx.Request) -> None:
        if request.url.path == "/":
            await client.get(server.url + "/echo")

    client = ExClient(
        limits=httpx.Limits(max_connections=1),
        follow_redirects=True,
        event_hooks={"request": [hook]},
    )
    async with client:
        with anyio.fail_after(5):
            response = await client.get(server.url + "/redirect?to=/")
        assert response.status_code == 200
        assert_pool_clean(client)


async def test_client_failing_socket_option_is_a_connect_error(silent_listener: str) -> None:
    # A bare listener: the connection is refused client-side before a word is sent. (With the
    # asyncio test server, a connection closed this fast as the server stops can leave its
    # server-side socket unclosed: a test-server race, not the client's.)
    transport = ExTransport(socket_options=[(socket.SOL_SOCKET, 9999, 1)])
    async with ExClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="could not set a socket option"):
            await client.get(silent_listener.replace("https://", "http://"))
        assert client.connections == []


async def test_client_local_address(server: LoopbackServer) -> None:
    async with ExClient(transport=ExTransport(local_address="127.0.0.1")) as client:
        response = await client.get(server.url + "/")
        assert response.extensions["network_stream"].get_extra_info("client_addr")[0] == (
            "127.0.0.1"
        )


async def test_client_connect_retries_reach_a_server_that_comes_up_late() -> None:
    """retries=N retries refused connects with backoff (0 s, 0.5 s, ...), as httpx does."""
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening yet: connects are refused
    port = sock.getsockname()[1]

    def come_up_late() -> None:
        time.sleep(0.2)
        sock.listen(1)
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    try:
        async with ExClient(transport=ExTransport(retries=0)) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")
        thread = threading.Thread(target=come_up_late)
        thread.start()
        async with ExClient(transport=ExTransport(retries=3)) as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
            assert response.text == "ok"
        thread.join()
    finally:
        sock.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_client_bad_transport_arguments() -> None:
    with pytest.raises(ValueError, match="retries must be a whole number"):
        ExTransport(retries=-1)
    with pytest.raises(TypeError, match=r"limits must be an httpx\.Limits"):
        ExTransport(limits={"max_connections": 1})  # type: ignore[arg-type]


async def test_client_socks5_proxy(
    server: LoopbackServer,
    https_server: LoopbackServer,
    client_ssl_context,  # type: ignore[no-untyped-def]
) -> None:
    from .servers import LoopbackSocksProxy

    with LoopbackSocksProxy() as socks:
        async with ExClient(proxy=socks.url, verify=client_ssl_context) as client:
            plain = [await client.get(server.url + "/") for _ in range(3)]
            tls = await client.get(https_server.url + "/")
            assert [r.status_code for r in (*plain, tls)] == [200] * 4
            assert len({r.extensions[CONN_ID] for r in plain}) == 1  # kept alive through SOCKS
            assert socks.connect_requests == [
                f"127.0.0.1:{server.port}",
                f"127.0.0.1:{https_server.port}",
            ]
            assert_pool_clean(client)


async def test_client_socks5_proxy_credentials(server: LoopbackServer) -> None:
    from .servers import LoopbackSocksProxy

    with LoopbackSocksProxy(auth=("user", "pass")) as socks:
        good = socks.url.replace("socks5://", "socks5://user:pass@")
        async with ExClient(proxy=good) as client:
            assert (await client.get(server.url + "/")).status_code == 200
        bad = socks.url.replace("socks5://", "socks5://user:wrong@")
        async with ExClient(proxy=bad) as client:
            with pytest.raises(httpx.ProxyError, match="rejected the username or password"):
                await client.get(server.url + "/")
            assert client.connections == []
        async with ExClient(proxy=socks.url) as client:
            with pytest.raises(httpx.ProxyError, match="refused authentication method"):
                await client.get(server.url + "/")
