"""ExClient on uvloop's event loop (``pip install uvloop``), the loop many asyncio services run.

The asyncio-native network stream (``_network.py``) uses the loop's transports and protocols
directly; uvloop implements them in C with its own corner cases (TLS, flow control, EOF), so
the main paths run here on it too: keep-alive reuse, a large body, HTTPS with NTLM and channel
binding, cancellation, and the stale keep-alive retry.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import trustme
import uvloop

from httpx_extensions import CONN_ID, ExClient, NTLMAuth

from .conftest import assert_pool_clean
from .servers import IISLikeServer, LoopbackServer, write_user_file
from .test_http11 import CLOSE, ScriptedServer, reply
from .test_http11 import serve as serve  # the scripted server's fixture

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"loop_factory": uvloop.new_event_loop})


@pytest.fixture(scope="module")
def iis_https(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[IISLikeServer]:
    users = write_user_file(
        tmp_path_factory.mktemp("uvloop") / "users.txt", [("EXAMPLE", "alice", "Passw0rd")]
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with IISLikeServer(
        user_file=users, ssl_context=context, require_channel_binding=True
    ) as server:
        yield server


async def test_uvloop_is_the_running_loop() -> None:
    import asyncio

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_uvloop_keepalive_reuses_one_connection_and_reads_large_bodies(
    server: LoopbackServer,
) -> None:
    async with ExClient() as client:
        responses = [await client.get(server.url + "/") for _ in range(3)]
        # 2 MB up and about as much back: flow control in both directions.
        big = await client.post(server.url + "/echo", content=b"x" * 2_000_000)
        assert {r.status_code for r in responses} == {200}
        assert len({r.extensions[CONN_ID] for r in responses}) == 1
        assert big.json()["body"] == "x" * 2_000_000
        assert big.extensions[CONN_ID] == responses[0].extensions[CONN_ID]
        assert_pool_clean(client)


async def test_uvloop_ntlm_over_https_with_channel_binding(
    iis_https: IISLikeServer, client_ssl_context: ssl.SSLContext
) -> None:
    auth = NTLMAuth("EXAMPLE\\alice", "Passw0rd")
    async with ExClient(auth=auth, verify=client_ssl_context) as client:
        first = await client.get(iis_https.url + "/data")
        second = await client.get(iis_https.url + "/data")
        assert first.status_code == second.status_code == 200
        assert first.json()["user"] == "EXAMPLE\\alice"
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]
        assert_pool_clean(client)


async def test_uvloop_cancelled_request_leaves_the_pool_clean(
    serve: Callable[..., ScriptedServer],
) -> None:
    never = serve([0.5, reply(b"late")])
    async with ExClient(timeout=5) as client:
        with anyio.move_on_after(0.05):
            await client.get(never.url)
        assert_pool_clean(client)
        assert client.connections == []


async def test_uvloop_lost_keepalive_request_sent_again(
    serve: Callable[..., ScriptedServer],
) -> None:
    server = serve(reply(b"one"), [CLOSE], reply(b"two"))
    async with ExClient() as client:
        first = await client.get(server.url)
        again = await client.get(server.url)
        assert again.text == "two"
        assert again.extensions[CONN_ID] != first.extensions[CONN_ID]
        assert_pool_clean(client)
