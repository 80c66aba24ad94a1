"""NTLMAuth and NegotiateAuth against a real Apache 2.4 + mod_auth_gssapi + gss-ntlmssp.

The IIS-like server is ours; this one is what Linux sites deploy (``GssapiConnectionBound
On``), so these tests check the client against an implementation it was not written with.
They skip when the Debian packages are missing (``scripts/install-apache``), unless
``HTTPX_EXT_REQUIRE_APACHE=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import anyio
import httpx
import pytest

from httpx_extensions import CONN_ID, ExClient, NegotiateAuth, NTLMAuth

from .conftest import assert_pool_clean
from .servers import write_user_file
from .servers.apache import ApacheNTLMServer, apache_unavailable

pytestmark = pytest.mark.anyio

USERS = [("EXAMPLE", "alice", "Passw0rd"), ("EXAMPLE", "bob", "hunter2")]
ALICE = ("EXAMPLE\\alice", "Passw0rd")
BOB = ("EXAMPLE\\bob", "hunter2")


@pytest.fixture(scope="module")
def apache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheNTLMServer]:
    reason = apache_unavailable()
    if reason is not None:
        if os.environ.get("HTTPX_EXT_REQUIRE_APACHE") == "1":
            pytest.fail(f"HTTPX_EXT_REQUIRE_APACHE=1 but {reason}")
        pytest.skip(reason)
    users = write_user_file(tmp_path_factory.mktemp("apache") / "users.txt", USERS)
    with ApacheNTLMServer(users) as server:
        yield server


@pytest.fixture
def server(apache: ApacheNTLMServer) -> ApacheNTLMServer:
    apache.reset_log()
    return apache


@pytest.mark.parametrize("auth_class", [NTLMAuth, NegotiateAuth])
async def test_apache_logon_then_one_exchange_per_request(
    server: ApacheNTLMServer, auth_class: type[NTLMAuth] | type[NegotiateAuth]
) -> None:
    async with ExClient(auth=auth_class(*ALICE)) as client:
        first = await client.get(server.url + "/")
        second = await client.get(server.url + "/")
        assert (first.status_code, first.text, first.headers["X-Remote-User"]) == (
            200,
            "ok",
            "EXAMPLE\\alice",
        )
        assert second.headers["X-Remote-User"] == "EXAMPLE\\alice"
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]
        assert_pool_clean(client)
    # Anonymous 401, negotiate 401, authenticate 200; then the connection is authenticated.
    assert server.statuses(at_least=4) == [401, 401, 200, 200]
    assert server.connections() == 1


async def test_apache_ntlm_wrong_password_returns_the_final_401(server: ApacheNTLMServer) -> None:
    async with ExClient(auth=NTLMAuth("EXAMPLE\\alice", "wrong")) as client:
        response = await client.get(server.url + "/")
        assert response.status_code == 401
        assert_pool_clean(client)
    assert server.statuses(at_least=3) == [401, 401, 401]


async def test_apache_2000_requests_through_10_connections(server: ApacheNTLMServer) -> None:
    n, concurrency = 2000, 50
    todo = iter(range(n))
    statuses: list[tuple[int, str]] = []
    limits = httpx.Limits(max_connections=10)
    async with ExClient(auth=NTLMAuth(*ALICE), limits=limits, timeout=30) as client:

        async def worker() -> None:
            for _ in todo:
                response = await client.get(server.url + "/")
                statuses.append((response.status_code, response.headers["X-Remote-User"]))

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        assert_pool_clean(client)
    assert statuses == [(200, "EXAMPLE\\alice")] * n
    exchanges = server.exchanges(at_least=n)
    assert exchanges / n <= 1.05, exchanges
    assert server.connections() <= 10


async def test_apache_interleaved_identities_each_get_their_own(
    server: ApacheNTLMServer,
) -> None:
    n, concurrency = 600, 50
    rnd = random.Random(11)
    chosen = [rnd.randrange(2) for _ in range(n)]
    auths = [NTLMAuth(*ALICE), NTLMAuth(*BOB)]
    names = ["EXAMPLE\\alice", "EXAMPLE\\bob"]
    todo = iter(range(n))
    wrong: list[int] = []
    limits = httpx.Limits(max_connections=10)
    async with ExClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            for i in todo:
                response = await client.get(server.url + "/", auth=auths[chosen[i]])
                if response.headers.get("X-Remote-User") != names[chosen[i]]:
                    wrong.append(i)

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        assert_pool_clean(client)
    assert wrong == []
    # A handshake per new connection: identities keep their connections (see
    # test_pool_partition_handoff), so far fewer than strict FIFO's one every other request.
    connections = server.connections(at_least_exchanges=n)
    assert connections < n // 4, connections


async def test_apache_anonymous_request_after_a_logon_gets_401(server: ApacheNTLMServer) -> None:
    # The authenticated connection is alice's: a request without credentials must not use it.
    async with ExClient() as client:
        logged_on = await client.get(server.url + "/", auth=NTLMAuth(*ALICE))
        anonymous = await client.get(server.url + "/")
        assert logged_on.status_code == 200
        assert anonymous.status_code == 401
        assert anonymous.extensions[CONN_ID] != logged_on.extensions[CONN_ID]
        assert_pool_clean(client)
