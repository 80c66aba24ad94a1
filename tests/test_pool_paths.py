"""The pool's less travelled paths, each as a user meets it: several reservations in one flow,
a flow spanning two pools, concurrent requests of one flow pinning one connection, closes
that fail, a connect that fails after the pool closed, a pinned waiter cancelled after its
connection went away, a native asyncio cancel while an expired pin is being closed."""

from __future__ import annotations

import asyncio
import logging

import anyio
import httpcore
import pytest

from httpx_extensions import ConnectionState, PoolClosed, PoolTimeout
from httpx_extensions._pool import ConnectionPool, Flow, PooledConnection, close_all, current_flow

from .test_pool import REQUEST, A, B, FakeConnection, Harness

pytestmark = pytest.mark.anyio


class InFlow:
    """``with InFlow() as flow:`` runs the block inside a fresh flow, as ExClient.send does."""

    def __enter__(self) -> Flow:
        self.flow = Flow()
        self._token = current_flow.set(self.flow)
        return self.flow

    def __exit__(self, *args: object) -> None:
        current_flow.reset(self._token)


async def test_pool_connection_predicates_follow_its_state() -> None:
    h = Harness()
    with InFlow() as flow:
        conn = await h.acquire()
        assert not conn.is_idle()
        assert not conn.is_reserved()
        await h.pool.release(conn)
        assert conn.is_reserved()
        assert not conn.is_idle()
    assert flow.end() == []
    assert conn.is_idle()
    assert not conn.is_closed()
    assert "1 idle" in repr(h.pool)


async def test_pool_flow_with_two_reservations_of_one_key_takes_them_back_one_by_one() -> None:
    h = Harness()
    with InFlow() as flow:
        first, second = await h.acquire(), await h.acquire()
        await h.pool.release(first)
        await h.pool.release(second)
        assert h.states() == [ConnectionState.RESERVED] * 2
        # Pinned to the older one: it leaves the flow's list, the other stays reserved.
        pinned = await h.acquire(pin=first.conn_id)
        assert pinned.conn_id == first.conn_id
        assert h.states() == [ConnectionState.ACTIVE, ConnectionState.RESERVED]
        again = await h.acquire()  # the flow's remaining reservation
        assert again.conn_id == second.conn_id
        third = await h.acquire()  # nothing reserved left: a new connection
        assert third.conn_id not in (first.conn_id, second.conn_id)
        for conn in (pinned, again, third):
            await h.pool.release(conn)
        assert h.states() == [ConnectionState.RESERVED] * 3
        assert "3 reserved" in repr(flow)
        # Two taken back in a row from one key's list of three.
        taken = [await h.acquire(), await h.acquire()]
        assert {c.conn_id for c in taken} < {first.conn_id, second.conn_id, third.conn_id}
        for conn in taken:
            await h.pool.release(conn)
    assert flow.end() == []
    assert h.states() == [ConnectionState.IDLE] * 3


async def test_pool_flow_spanning_two_pools_evicts_its_reservation_in_the_right_pool() -> None:
    other = Harness()
    h = Harness(max_connections=1)
    with InFlow() as flow:
        elsewhere = await other.acquire(A)
        await other.pool.release(elsewhere)  # reserved in the other pool, listed first
        mine = await h.acquire(A)
        await h.pool.release(mine)
        # Full, and all this pool holds is the flow's own reservation: it is given up.
        b = await h.acquire(B)
        assert b.origin == B
        assert h.opened[0].closed
        assert not other.opened[0].closed  # the other pool's reservation is not touched
        assert other.states() == [ConnectionState.RESERVED]
        await h.pool.release(b)
    flow.end()
    assert other.states() == [ConnectionState.IDLE]


async def test_pool_expired_reservation_is_not_reused_by_its_flow() -> None:
    h = Harness()
    with InFlow() as flow:
        conn = await h.acquire()
        await h.pool.release(conn)
        h.opened[0].expired = True  # the server closed it between two legs
        again = await h.acquire()
        assert again.conn_id != conn.conn_id
        assert h.opened[0].closed
        await h.pool.release(again)
    flow.end()


async def test_pool_concurrent_requests_of_one_flow_pinning_one_connection() -> None:
    # Two tasks inside one flow (a task group in an event hook, say) and one outside it all
    # pin the same connection: when the flow's request releases it, the flow's own pinned
    # waiter gets it ahead of the older waiter of another flow; then the other one.
    h = Harness()
    got: dict[str, PooledConnection] = {}
    with InFlow() as flow:
        busy = await h.acquire()

        async def pinned(name: str) -> None:
            got[name] = await h.acquire(pin=busy.conn_id)

        async with anyio.create_task_group() as tg:
            token = current_flow.set(None)
            tg.start_soon(pinned, "outsider")  # the task copies the context: no flow
            current_flow.reset(token)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(pinned, "same-flow")
            await anyio.wait_all_tasks_blocked()
            assert h.pool.waiting == 2
            await h.pool.release(busy)
            await anyio.wait_all_tasks_blocked()
            assert list(got) == ["same-flow"]
            await h.pool.release(got["same-flow"])  # reserved again...
            await anyio.wait_all_tasks_blocked()
            assert list(got) == ["same-flow"]
            assert flow.end() == []  # ...until the flow ends: then the outsider gets it
    assert got["outsider"].conn_id == busy.conn_id
    await h.pool.release(got["outsider"])
    assert h.states() == [ConnectionState.IDLE]


class FailingClose(FakeConnection):
    async def aclose(self) -> None:
        self.closed = True
        raise OSError("connection reset while closing")


async def test_close_all_logs_a_failing_close_and_closes_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conns = [FailingClose(A), FakeConnection(A)]
    with caplog.at_level(logging.DEBUG, logger="httpx_extensions.pool"):
        await close_all(conns)
    assert all(c.closed for c in conns)
    assert "error while closing a connection" in caplog.text


async def test_pool_connect_failing_after_the_pool_closed_raises_the_connect_error() -> None:
    opening = anyio.Event()
    proceed = anyio.Event()

    async def connect(origin: httpcore.Origin, request: httpcore.Request) -> FakeConnection:
        opening.set()
        await proceed.wait()
        raise httpcore.ConnectError("refused")

    pool = ConnectionPool(connect)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    async def request() -> None:
        try:
            await pool.acquire(REQUEST, A)
        except httpcore.ConnectError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await opening.wait()
        await pool.aclose()
        proceed.set()
    assert [str(e) for e in errors] == ["refused"]
    assert pool.connections == []


async def test_pinned_waiter_cancelled_after_its_connection_closed() -> None:
    # The pinned connection closes (the waiter is woken with nothing) and the waiter is
    # cancelled before it runs: nothing to give back, nothing left queued.
    h = Harness()
    busy = await h.acquire()
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()
        outcome: list[object] = []

        async def pinned() -> None:
            with scope:
                outcome.append(await h.acquire(pin=busy.conn_id))
            outcome.append("cancelled" if scope.cancelled_caught else "done")

        tg.start_soon(pinned)
        await anyio.wait_all_tasks_blocked()
        h.opened[0].idle = False
        await h.pool.release(busy)  # not reusable: closed, the pinned waiter woken
        scope.cancel()
    assert h.pool.waiting == 0
    assert ConnectionState.ACTIVE not in h.states() or outcome[0] != "cancelled"
    for item in outcome:
        if isinstance(item, PooledConnection):  # trio: it got a fresh connection first
            await h.pool.release(item)
    assert ConnectionState.ACTIVE not in h.states()


async def test_two_requests_pinned_to_one_busy_connection_are_served_in_order() -> None:
    h = Harness()
    busy = await h.acquire()
    got: list[str] = []
    conns: dict[str, PooledConnection] = {}

    async def pinned(name: str) -> None:
        conns[name] = await h.acquire(pin=busy.conn_id)
        got.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pinned, "first")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(pinned, "second")
        await anyio.wait_all_tasks_blocked()
        assert h.pool.waiting == 2
        await h.pool.release(busy)
        await anyio.wait_all_tasks_blocked()
        assert got == ["first"]
        await h.pool.release(conns["first"])
    assert got == ["first", "second"]
    assert conns["second"].conn_id == busy.conn_id
    await h.pool.release(conns["second"])


async def test_pool_as_an_async_context_manager_closes_its_connections() -> None:
    h = Harness()
    async with h.pool as pool:
        assert pool is h.pool
        conn = await h.acquire()
        await h.pool.release(conn)
    assert h.opened[0].closed
    with pytest.raises(PoolClosed):
        await h.acquire()


class SlowClose(FakeConnection):
    def __init__(self, origin: httpcore.Origin, closing: anyio.Event) -> None:
        super().__init__(origin)
        self._closing = closing

    async def aclose(self) -> None:
        self._closing.set()
        await anyio.sleep_forever()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pool_native_cancel_while_closing_an_expired_pin_leaves_the_queue() -> None:
    # A flow pins its own reservation, which turns out expired: it is closed (slowly) while
    # the request queues, and asyncio's task.cancel() lands during that close. The request
    # must leave the queue; the slot the expired connection freed went to the older waiter.
    closing = anyio.Event()
    h = Harness(max_connections=2)
    held = await h.acquire(A)
    got: list[PooledConnection] = []
    with InFlow() as flow:
        reserved_slot = await h.pool.acquire(REQUEST, A)
        slow = SlowClose(A, closing)
        reserved_slot.connection = slow
        await h.pool.release(reserved_slot)  # RESERVED to the flow; the pool is full

        async def wants_b() -> None:
            token = current_flow.set(None)
            try:
                got.append(await h.acquire(B))
            finally:
                current_flow.reset(token)

        waiter_b = asyncio.ensure_future(wants_b())
        await anyio.wait_all_tasks_blocked()
        assert h.pool.waiting == 1
        slow.expired = True
        task = asyncio.ensure_future(h.acquire(A, pin=reserved_slot.conn_id))
        await closing.wait()
        assert h.pool.waiting == 1  # our request queued behind the slot it freed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert h.pool.waiting == 0
    await waiter_b
    assert got[0].origin == B  # the older waiter got the freed slot
    await h.pool.release(got[0])
    await h.pool.release(held)
    flow.end()
    assert ConnectionState.ACTIVE not in h.states()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pool_native_cancel_while_closing_after_the_pool_closed_fails_cleanly() -> None:
    # As above, but the client is closed while the expired pin closes: our queued request
    # is failed (nothing handed to it), then asyncio's task.cancel() lands. It ends
    # cancelled, with nothing to give back, and nothing stays queued.
    closing = anyio.Event()
    h = Harness(max_connections=2)
    await h.acquire(A)
    with InFlow() as flow:
        reserved_slot = await h.pool.acquire(REQUEST, A)
        slow = SlowClose(A, closing)
        reserved_slot.connection = slow
        await h.pool.release(reserved_slot)

        async def wants_b() -> None:
            token = current_flow.set(None)
            try:
                await h.acquire(B)
            finally:
                current_flow.reset(token)

        waiter_b = asyncio.ensure_future(wants_b())
        await anyio.wait_all_tasks_blocked()
        slow.expired = True
        task = asyncio.ensure_future(h.acquire(A, pin=reserved_slot.conn_id))
        await closing.wait()
        assert h.pool.waiting == 1  # the slot went to B; our request queued
        await h.pool.aclose()  # fails both waiters while ours is still closing
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.gather(waiter_b, return_exceptions=True)  # B got the slot, or PoolClosed
    flow.end()
    assert h.pool.waiting == 0
    assert h.pool.connections == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pool_native_cancel_of_a_pinned_waiter_woken_by_its_connection_closing() -> None:
    # asyncio's own task.cancel() (asyncio.timeout, wait_for) is delivered even after the
    # waiter was woken, unlike anyio's: woken with no connection, it has nothing to give back.
    h = Harness()
    busy = await h.acquire()
    task = asyncio.ensure_future(h.acquire(pin=busy.conn_id))
    await anyio.wait_all_tasks_blocked()
    assert h.pool.waiting == 1
    h.opened[0].idle = False
    await h.pool.release(busy)  # closed: the pinned waiter is woken with nothing
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.pool.waiting == 0
    assert h.pool.connections == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pool_native_cancel_of_a_waiter_just_handed_a_connection_gives_it_back() -> None:
    h = Harness(max_connections=1)
    held = await h.acquire()
    task = asyncio.ensure_future(h.acquire())
    await anyio.wait_all_tasks_blocked()
    await h.pool.release(held)  # handed to the waiter, which has not run yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.states() == [ConnectionState.IDLE]  # given back, not lost
    assert (await h.acquire()).conn_id == held.conn_id


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pool_native_cancel_while_closing_after_being_handed_a_connection() -> None:
    # As above, but while the expired pin closes, the held connection is released and
    # handed to our queued request; then asyncio's task.cancel() lands. The connection
    # must come back to the pool, not stay ACTIVE for a request that is gone.
    closing = anyio.Event()
    h = Harness(max_connections=2)
    held = await h.acquire(A)
    got: list[PooledConnection] = []
    with InFlow() as flow:
        reserved_slot = await h.pool.acquire(REQUEST, A)
        slow = SlowClose(A, closing)
        reserved_slot.connection = slow
        await h.pool.release(reserved_slot)

        async def wants_b() -> None:
            token = current_flow.set(None)
            try:
                got.append(await h.acquire(B))
            finally:
                current_flow.reset(token)

        waiter_b = asyncio.ensure_future(wants_b())
        await anyio.wait_all_tasks_blocked()
        slow.expired = True
        task = asyncio.ensure_future(h.acquire(A, pin=reserved_slot.conn_id))
        await closing.wait()
        await h.pool.release(held)  # handed to our queued request while it closes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await waiter_b
    await h.pool.release(got[0])
    flow.end()
    assert ConnectionState.ACTIVE not in h.states()


async def test_pool_connection_info_counts_requests_and_shows_the_partition() -> None:
    h = Harness()
    conn = await h.acquire(partition="alice")
    assert conn.partition == "alice"
    await h.pool.release(conn)
    again = await h.acquire(partition="alice")
    assert again.conn_id == conn.conn_id
    [info] = h.pool.connections
    assert (info.partition, info.requests, info.origin) == ("alice", 2, "http://a.test:80")
    assert f"conn_id={conn.conn_id} [http://a.test:80, ACTIVE, partition='alice', requests=2]" in (
        repr(again)
    )
    await h.pool.release(again)
    anonymous = await h.acquire()
    assert repr(anonymous).endswith("[http://a.test:80, ACTIVE, requests=1]>")
    assert h.pool.connections[1].partition is None


@pytest.mark.parametrize("take_back", ["pick", "pin"])
async def test_pool_flow_evicts_its_other_reservation_after_taking_one_back(
    take_back: str,
) -> None:
    # The flow took its A reservation back (by a pick or a pin), so it holds nothing for A,
    # and B is reserved: a request for C in the full pool must evict B, not wait for a
    # reservation that the flow no longer holds.
    h = Harness(max_connections=2)
    with InFlow() as flow:
        a = await h.acquire(A)
        await h.pool.release(a)
        pin = {"pin": a.conn_id} if take_back == "pin" else {}
        a_again = await h.acquire(A, **pin)
        assert a_again.conn_id == a.conn_id
        b = await h.acquire(B)
        await h.pool.release(b)
        assert "1 reserved" in repr(flow)
        c = await h.acquire(C_ORIGIN, timeout=5)
        assert c.origin == C_ORIGIN
        assert h.opened[1].closed  # B, the flow's own reservation, made room
        await h.pool.release(c)
        await h.pool.release(a_again)
    flow.end()
    assert ConnectionState.ACTIVE not in h.states()


C_ORIGIN = httpcore.Origin(b"http", b"c.test", 80)


async def test_pool_timeout_already_past_fires_before_a_later_release() -> None:
    # The pool clock says the deadline has passed by the time the request queues: it must
    # fail at once, not after some grace, so a release 0.5 s later does not reach it.
    readings = iter([0.0, 10.0])
    h = Harness(max_connections=1, clock=lambda: next(readings, 10.0))
    held = await h.acquire()
    events: list[str] = []

    async def release_later() -> None:
        await anyio.sleep(0.5)
        events.append("released")
        await h.pool.release(held)

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_later)
        with pytest.raises(PoolTimeout):
            await h.acquire(timeout=1.0)
        events.append("timed out")
    assert events == ["timed out", "released"]
    assert h.pool.waiting == 0


def test_pool_used_from_two_event_loops_in_turn_keeps_its_timeouts() -> None:
    # The shared timer of pool timeouts belongs to one loop: a pool used again under a new
    # loop (asyncio.run twice, as scripts do) must not arm it on the closed one.
    h = Harness(max_connections=1)

    async def one_timeout() -> None:
        held = await h.acquire()
        with pytest.raises(PoolTimeout):
            await h.acquire(timeout=0.01)
        await h.pool.release(held)

    asyncio.run(one_timeout())
    asyncio.run(one_timeout())
    assert h.states() == [ConnectionState.IDLE]
