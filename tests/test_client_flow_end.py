"""A send()'s flow ending while a request for another origin waits for the only slot."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import httpx
import pytest

from httpx_extensions import ExClient

from .conftest import assert_pool_clean
from .servers import LoopbackServer

pytestmark = pytest.mark.anyio


async def test_client_a_flow_ending_hands_its_slot_to_a_waiter_of_another_origin(
    server: LoopbackServer, other_server: LoopbackServer
) -> None:
    # One connection; a send() holds it (its response read, the connection reserved to the
    # flow until send() returns) while a request for another origin queues. When the flow
    # ends, nobody of its origin waits and the waiter's origin has no connection of its own:
    # the connection is closed there and then, and the waiter gets a new one (not parked).
    first_read = anyio.Event()
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        pool = client._transport.pool  # type: ignore[attr-defined]

        async def hold(response: httpx.Response) -> None:
            if response.url.port == server.port:
                first_read.set()
                # The pool signals nothing when a request queues: checkpoints until it has.
                while pool.waiting < 1:
                    await anyio.lowlevel.checkpoint()

        client.event_hooks["response"] = [hold]  # httpx's send(): the flow ends at its end
        results: dict[str, httpx.Response] = {}

        async def get(name: str, url: str) -> None:
            results[name] = await client.get(url)

        async with anyio.create_task_group() as tg:
            tg.start_soon(get, "first", server.url + "/")
            await first_read.wait()
            tg.start_soon(get, "other", other_server.url + "/")
        assert results["first"].status_code == 200
        assert results["other"].status_code == 200
        first_conn = results["first"].extensions["conn_id"]
        other_conn = results["other"].extensions["conn_id"]
        assert other_conn != first_conn
        # The first origin's connection was closed for the waiter, not parked beside it:
        # the pool forgot it, and its socket was closed (the server sees the close).
        assert [info.conn_id for info in client.connections] == [other_conn]
        with anyio.fail_after(10):
            while server.open_connections:  # noqa: ASYNC110 - another thread's counter
                await anyio.sleep(0.01)
        assert_pool_clean(client)
