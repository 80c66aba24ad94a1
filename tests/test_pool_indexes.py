"""The pool's bookkeeping as requests see it: a connection evicted to make room is gone from
every index (its origin gets a new one later), a pinned idle connection is not handed to anyone
else, a connection given out inside a flow is kept for that flow, capacity freed by an expired
pin goes to the oldest waiter, and a close cancelled from outside still closes."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from httpx_extensions import ConnectionState
from httpx_extensions._pool import close_all

from .test_pool import A, B, Harness
from .test_pool_paths import InFlow

pytestmark = pytest.mark.anyio


async def test_pool_full_evicts_an_idle_connection_of_another_origin_for_good() -> None:
    h = Harness(max_connections=1)
    on_a = await h.acquire(A)
    await h.pool.release(on_a)
    on_b = await h.acquire(B)  # full: A's idle connection is closed to make room
    await h.pool.release(on_b)
    again_a = await h.acquire(A)  # B's goes the same way; A gets a new one
    assert [c.origin for c in h.opened] == [A, B, A]
    assert [c.closed for c in h.opened] == [True, True, False]
    assert again_a.conn_id not in (on_a.conn_id, on_b.conn_id)
    await h.pool.release(again_a)
    assert h.states() == [ConnectionState.IDLE]


async def test_pool_keepalive_limit_evicts_the_oldest_idle_for_good() -> None:
    h = Harness(max_keepalive_connections=1)
    on_a = await h.acquire(A)
    on_b = await h.acquire(B)
    await h.pool.release(on_a)
    await h.pool.release(on_b)  # two idle, one kept: A's (the older) is closed
    assert [c.closed for c in h.opened] == [True, False]
    again_a = await h.acquire(A)
    assert again_a.conn_id != on_a.conn_id
    assert [c.origin for c in h.opened] == [A, B, A]
    assert (await h.acquire(B)).conn_id == on_b.conn_id


async def test_pool_pinned_idle_connection_is_not_handed_to_another_request() -> None:
    h = Harness()
    first = await h.acquire()
    await h.pool.release(first)
    pinned = await h.acquire(pin=first.conn_id)
    other = await h.acquire()  # the only idle connection is taken by the pin
    assert pinned.conn_id == first.conn_id
    assert other.conn_id != first.conn_id
    assert len(h.opened) == 2
    await h.pool.release(pinned)
    await h.pool.release(other)
    assert h.states() == [ConnectionState.IDLE, ConnectionState.IDLE]


async def test_pool_idle_connection_taken_in_a_flow_is_kept_for_that_flow() -> None:
    # An auth handshake's legs (one flow) must stay on the connection its first leg took, even
    # when that connection came from the idle set or through a pin.
    h = Harness()
    before = await h.acquire()
    await h.pool.release(before)
    with InFlow() as flow:
        leg = await h.acquire()
        assert leg.conn_id == before.conn_id
        await h.pool.release(leg)
        assert leg.is_reserved()
        outsider = await h.acquire(B)
    await h.pool.release(outsider)
    assert flow.end() == []
    with InFlow() as flow:
        pinned = await h.acquire(B, pin=outsider.conn_id)
        assert pinned.conn_id == outsider.conn_id
        await h.pool.release(pinned)
        assert pinned.is_reserved()
    assert flow.end() == []


async def test_pool_connection_handed_to_a_waiter_in_a_flow_is_kept_for_that_flow() -> None:
    h = Harness(max_connections=1)
    held = await h.acquire()
    got = []

    async def leg() -> None:
        with InFlow() as flow:
            conn = await h.acquire()
            got.append(conn)
            await h.pool.release(conn)
            got.append(conn.is_reserved())
        flow.end()

    async with anyio.create_task_group() as tg:
        tg.start_soon(leg)
        await anyio.wait_all_tasks_blocked()
        assert h.pool.waiting == 1
        await h.pool.release(held)  # handed to the waiting leg
    assert got == [held, True]


async def test_pool_expired_pin_frees_its_capacity_for_the_oldest_waiter() -> None:
    h = Harness(max_connections=1)
    order: list[str] = []
    with InFlow() as flow:
        reserved = await h.acquire()
        await h.pool.release(reserved)  # kept for the flow: the pool is full
        async with anyio.create_task_group() as tg:

            async def outsider() -> None:
                with InFlow() as own:  # not the pinner's flow, which this task inherits
                    conn = await h.acquire(B)
                    order.append("outsider")
                    await h.pool.release(conn)
                for _pool, conns in own.end():  # B's connection: the pinner needs the room
                    await close_all(conns)

            tg.start_soon(outsider)
            await anyio.wait_all_tasks_blocked()
            assert h.pool.waiting == 1
            h.opened[0].expired = True  # the server closed it while it was kept
            with anyio.fail_after(10):  # a guard against a hang, not a measurement
                mine = await h.acquire(pin=reserved.conn_id)
            order.append("pinner")
            await h.pool.release(mine)
    flow.end()
    # The outsider waited longest: the capacity the expired connection freed went to it.
    assert order == ["outsider", "pinner"]
    assert [c.origin for c in h.opened] == [A, B, A]


class SlowClose:
    """A connection whose close yields to the event loop, as a real socket's does."""

    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.closed = True


async def test_pool_close_all_finishes_inside_a_cancelled_scope() -> None:
    conns = [SlowClose(), SlowClose()]
    with anyio.CancelScope() as scope:
        scope.cancel()
        await close_all(conns)  # type: ignore[arg-type]
    assert [c.closed for c in conns] == [True, True]
