"""The pool's state machine and scheduling, with fake connections behind its Protocol seam."""

from __future__ import annotations

import itertools
import logging

import anyio
import anyio.lowlevel
import httpcore
import pytest

from httpx_extensions import ConnectionState, ConnectionStateError, PoolClosed, PoolTimeout
from httpx_extensions._pool import (
    _TRANSITIONS,
    ConnectionPool,
    Flow,
    PooledConnection,
    close_all,
    current_flow,
)

pytestmark = pytest.mark.anyio

A = httpcore.Origin(b"http", b"a.test", 80)
B = httpcore.Origin(b"http", b"b.test", 80)
REQUEST = httpcore.Request("GET", "http://a.test/")


class FakeConnection:
    """Satisfies ConnectionLike; the test decides whether it is reusable after a response."""

    def __init__(self, origin: httpcore.Origin) -> None:
        self.origin = origin
        self.idle = True
        self.closed = False
        self.expired = False

    async def aclose(self) -> None:
        self.closed = True

    def has_expired(self) -> bool:
        return self.expired

    def is_idle(self) -> bool:
        return self.idle and not self.closed

    def is_closed(self) -> bool:
        return self.closed


class Harness:
    def __init__(self, **limits: object) -> None:
        self.opened: list[FakeConnection] = []
        self.fail_next_connect = False
        self.pool = ConnectionPool(self.connect, **limits)  # type: ignore[arg-type]

    async def connect(self, origin: httpcore.Origin, request: httpcore.Request) -> FakeConnection:
        await anyio.lowlevel.checkpoint()
        if self.fail_next_connect:
            self.fail_next_connect = False
            raise httpcore.ConnectError("refused")
        conn = FakeConnection(origin)
        self.opened.append(conn)
        return conn

    async def acquire(self, origin: httpcore.Origin = A, **kwargs) -> PooledConnection:  # type: ignore[no-untyped-def]
        return await self.pool.acquire(REQUEST, origin, **kwargs)

    async def acquire_until_closed(self, errors: list[BaseException]) -> None:
        """Queue for a connection; record the PoolClosed that ends the wait."""
        try:
            await self.acquire()
        except PoolClosed as exc:
            errors.append(exc)

    def states(self) -> list[ConnectionState]:
        return [info.state for info in self.pool.connections]


def test_pool_every_illegal_transition_raises() -> None:
    for start, end in itertools.product(ConnectionState, ConnectionState):
        conn = PooledConnection(A, (b"http", b"a.test", 80, None), None)
        conn._state = start
        if end in _TRANSITIONS[start]:
            conn._move(end)
            assert conn.state is end
        else:
            with pytest.raises(ConnectionStateError, match=f"from {start.name} to {end.name}"):
                conn._move(end)
            assert conn.state is start


async def test_pool_reuses_idle_connection_lifo() -> None:
    h = Harness()
    first, second = await h.acquire(), await h.acquire()
    await h.pool.release(first)
    await h.pool.release(second)
    assert (await h.acquire()).conn_id == second.conn_id  # most recently used first
    assert len(h.opened) == 2


async def test_pool_waiters_are_served_fifo_one_per_freed_connection() -> None:
    h = Harness(max_connections=1)
    held = await h.acquire()
    order: list[int] = []
    got: dict[int, PooledConnection] = {}

    async def wait(i: int) -> None:
        got[i] = await h.acquire()
        order.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(wait, i)
            await anyio.wait_all_tasks_blocked()
        assert h.pool.waiting == 3
        await h.pool.release(held)
        await anyio.wait_all_tasks_blocked()
        assert order == [0]  # exactly one woken
        assert h.pool.waiting == 2
        await h.pool.release(got[0])
        await anyio.wait_all_tasks_blocked()
        await h.pool.release(got[1])
    await h.pool.release(got[2])
    assert order == [0, 1, 2]
    assert len(h.opened) == 1
    assert h.states() == [ConnectionState.IDLE]


async def test_pool_oldest_waiter_for_another_origin_gets_the_slot() -> None:
    h = Harness(max_connections=1)
    held = await h.acquire(A)
    async with anyio.create_task_group() as tg:
        results: list[PooledConnection] = []

        async def want_b() -> None:
            results.append(await h.acquire(B))

        tg.start_soon(want_b)
        await anyio.wait_all_tasks_blocked()
        await h.pool.release(held)
    assert results[0].origin == B
    assert h.opened[0].closed  # A was closed to make room
    assert [i.origin for i in h.pool.connections] == ["http://b.test:80"]


async def test_pool_full_of_idle_connections_evicts_the_oldest_for_a_new_origin() -> None:
    h = Harness(max_connections=2)
    a1, a2 = await h.acquire(A), await h.acquire(A)
    await h.pool.release(a1)
    await h.pool.release(a2)
    b = await h.acquire(B)
    assert b.origin == B
    assert h.opened[0].closed
    assert not h.opened[1].closed


async def test_pool_max_keepalive_bounds_idle_connections() -> None:
    h = Harness(max_connections=10, max_keepalive_connections=2)
    conns = [await h.acquire() for _ in range(5)]
    for conn in conns:
        await h.pool.release(conn)
    assert h.states() == [ConnectionState.IDLE] * 2
    assert [c.closed for c in h.opened] == [True, True, True, False, False]


async def test_pool_keepalive_expiry_closes_old_idle_connections() -> None:
    now = [0.0]
    h = Harness(keepalive_expiry=0.05, clock=lambda: now[0])
    old = await h.acquire()
    await h.pool.release(old)
    now[0] += 0.1  # the pool's clock, not a sleep
    fresh = await h.acquire(B)  # any acquire sweeps the oldest idle connection
    assert h.opened[0].closed
    assert fresh.conn_id != old.conn_id


async def test_pool_expired_idle_connection_is_skipped() -> None:
    h = Harness()
    conn = await h.acquire()
    await h.pool.release(conn)
    h.opened[0].expired = True
    assert (await h.acquire()).conn_id != conn.conn_id
    assert h.opened[0].closed


async def test_pool_broken_connection_is_closed_on_release() -> None:
    h = Harness(max_connections=1)
    conn = await h.acquire()
    h.opened[0].idle = False  # e.g. the response was not read to the end
    await h.pool.release(conn)
    assert h.opened[0].closed
    assert h.pool.connections == []


async def test_pool_flow_reserves_until_it_ends() -> None:
    h = Harness(max_connections=2)
    flow = Flow()
    token = current_flow.set(flow)
    try:
        leg1 = await h.acquire()
        await h.pool.release(leg1)
        assert h.states() == [ConnectionState.RESERVED]
        assert h.pool.connections[0].reserved
        leg2 = await h.acquire()
        assert leg2.conn_id == leg1.conn_id
        await h.pool.release(leg2)
    finally:
        current_flow.reset(token)
    # Another caller cannot take the reservation: it gets a new connection.
    other = await h.acquire()
    assert other.conn_id != leg1.conn_id
    assert flow.end() == []
    assert h.states() == [ConnectionState.IDLE, ConnectionState.ACTIVE]
    assert "ended" in repr(flow)


async def test_pool_flow_evicts_its_own_reservation_instead_of_deadlocking() -> None:
    h = Harness(max_connections=1)
    flow = Flow()
    token = current_flow.set(flow)
    try:
        a = await h.acquire(A)
        await h.pool.release(a)  # RESERVED to the flow, and the pool is full
        with anyio.fail_after(1):
            b = await h.acquire(B)
        assert b.origin == B
        assert h.opened[0].closed
    finally:
        current_flow.reset(token)
    await h.pool.release(b)
    flow.end()
    assert h.states() == [ConnectionState.IDLE]


async def test_pool_pin_waits_for_a_reservation_of_another_flow() -> None:
    h = Harness()
    flow = Flow()
    token = current_flow.set(flow)
    conn = await h.acquire()
    await h.pool.release(conn)
    current_flow.reset(token)
    got: list[PooledConnection] = []

    async def pinned() -> None:
        got.append(await h.acquire(pin=conn.conn_id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(pinned)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        assert flow.end() == []  # frees the reservation: the pinned waiter gets it
    assert got[0].conn_id == conn.conn_id


async def test_pool_pin_falls_back_when_its_connection_closes_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    busy = await h.acquire()
    got: list[PooledConnection] = []

    async def pinned() -> None:
        got.append(await h.acquire(pin=busy.conn_id))

    with caplog.at_level(logging.WARNING, logger="httpx_extensions"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pinned)
            await anyio.wait_all_tasks_blocked()
            h.opened[0].idle = False
            await h.pool.release(busy)  # closed, not reusable
    assert got[0].conn_id != busy.conn_id
    assert f"conn_id {busy.conn_id} closed while waiting" in caplog.text


async def test_pool_pin_to_another_partition_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    alice = await h.acquire(partition="alice")
    await h.pool.release(alice)
    with caplog.at_level(logging.WARNING, logger="httpx_extensions"):
        bob = await h.acquire(partition="bob", pin=alice.conn_id)
    assert bob.conn_id != alice.conn_id
    assert "another partition" in caplog.text


async def test_pool_timeout_removes_the_waiter() -> None:
    h = Harness(max_connections=1)
    await h.acquire()
    with pytest.raises(PoolTimeout):
        await h.acquire(timeout=0.05)
    assert h.pool.waiting == 0


async def test_pool_connect_failure_hands_the_slot_to_a_waiter() -> None:
    h = Harness(max_connections=1)
    h.fail_next_connect = True
    with pytest.raises(httpcore.ConnectError):
        await h.acquire()
    assert h.pool.connections == []
    assert (await h.acquire()).state is ConnectionState.ACTIVE


async def test_pool_close_fails_waiters_and_later_requests() -> None:
    h = Harness(max_connections=1)
    await h.acquire()
    errors: list[BaseException] = []

    async with anyio.create_task_group() as tg:
        tg.start_soon(h.acquire_until_closed, errors)
        await anyio.wait_all_tasks_blocked()
        await h.pool.aclose()
    assert len(errors) == 1
    assert h.opened[0].closed
    with pytest.raises(PoolClosed, match="open a new client"):
        await h.acquire()
    assert repr(h.pool) == "<ConnectionPool [empty, 0 waiting]>"


class SlowClose(FakeConnection):
    async def aclose(self) -> None:
        await anyio.sleep(0.05)
        self.closed = True


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pool_native_asyncio_cancel_during_an_eviction_close_gives_the_slot_back() -> None:
    import asyncio

    h = Harness(max_connections=1)
    h.connect = None  # type: ignore[assignment]

    async def connect(origin: httpcore.Origin, request: httpcore.Request) -> FakeConnection:
        conn = SlowClose(origin)
        h.opened.append(conn)
        return conn

    h.pool._connect = connect
    idle = await h.acquire(A)
    await h.pool.release(idle)
    task = asyncio.ensure_future(h.acquire(B))  # evicts A (a slow close), takes the slot for B
    await anyio.wait_all_tasks_blocked()
    task.cancel()  # asyncio's own cancel goes through anyio's shield
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.pool.connections == []
    assert (await h.acquire(B, timeout=10)).origin == B  # the slot is free: no wait


async def test_pool_reservation_closed_by_the_server_is_not_handed_to_a_waiter() -> None:
    h = Harness(max_connections=1)
    flow = Flow()
    token = current_flow.set(flow)
    reserved = await h.acquire()
    await h.pool.release(reserved)
    current_flow.reset(token)
    got: list[PooledConnection] = []

    async def waiter() -> None:
        got.append(await h.acquire())

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        h.opened[0].expired = True  # the server closed it while the flow held it
        for _pool, conns in flow.end():
            await close_all(conns)
    assert got[0].conn_id != reserved.conn_id
    assert h.opened[0].closed
    assert len(h.opened) == 2


async def test_pool_close_while_a_waiter_is_being_handed_a_connection() -> None:
    h = Harness(max_connections=1)
    held = await h.acquire()
    errors: list[BaseException] = []

    async with anyio.create_task_group() as tg:
        tg.start_soon(h.acquire_until_closed, errors)
        await anyio.wait_all_tasks_blocked()
        await h.pool.release(held)  # handed to the waiter, which has not run yet
        await h.pool.aclose()
    assert len(errors) == 1


async def test_pool_pinned_waiter_that_times_out_leaves_the_queue() -> None:
    h = Harness()
    busy = await h.acquire()
    with pytest.raises(PoolTimeout):
        await h.acquire(pin=busy.conn_id, timeout=0.05)
    assert h.pool.waiting == 0
    await h.pool.release(busy)
    assert h.states() == [ConnectionState.IDLE]
