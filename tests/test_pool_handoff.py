"""Who gets a freed connection or freed capacity, and when time runs out: the pool driven
directly, with fake connections and a fake clock. Order is established by letting every task
block (``anyio.wait_all_tasks_blocked``), never by sleeping."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import httpcore
import pytest

from httpx_extensions import ConnectionState, PoolClosed, PoolTimeout, _pool
from httpx_extensions._pool import ConnectionPool, Flow, PooledConnection, current_flow

from .test_pool import REQUEST, A, B, FakeConnection, Harness

pytestmark = pytest.mark.anyio

C = httpcore.Origin(b"http", b"c.test", 80)


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Queue:
    """Tasks queued for a connection in a known order; each records what it got."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.got: dict[str, PooledConnection] = {}
        self.order: list[str] = []
        self.errors: dict[str, BaseException] = {}

    async def join(self, tg: anyio.abc.TaskGroup, name: str, origin: httpcore.Origin = A) -> None:
        """Start a task that queues for ``origin``; return once it is in the queue."""
        before = self.h.pool.waiting

        async def run() -> None:
            try:
                self.got[name] = await self.h.acquire(origin)
            except Exception as exc:
                self.errors[name] = exc
            else:
                self.order.append(name)

        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        assert self.h.pool.waiting == before + 1, f"{name} did not queue"

    async def settle(self) -> None:
        await anyio.wait_all_tasks_blocked()


# Hand-off order.


async def test_pool_freed_connection_goes_to_the_oldest_of_several_waiters() -> None:
    h = Harness(max_connections=1)
    held = await h.acquire()
    q = Queue(h)
    async with anyio.create_task_group() as tg:
        for name in ("first", "second", "third", "fourth"):
            await q.join(tg, name)
        for expected in (["first"], ["first", "second"], ["first", "second", "third"]):
            await h.pool.release(held)
            await q.settle()
            assert q.order == expected  # one woken per freed connection, oldest first
            held = q.got[expected[-1]]
        await h.pool.release(held)
    assert q.order == ["first", "second", "third", "fourth"]
    assert len(h.opened) == 1  # every hand-off reused the one connection
    await h.pool.release(q.got["fourth"])
    assert h.states() == [ConnectionState.IDLE]


async def test_pool_freed_capacity_goes_to_the_oldest_waiters_first() -> None:
    # Capacity is freed (not a connection): broken connections are closed on release, and
    # _grant_slots lets the oldest waiters open new ones, in queue order.
    h = Harness(max_connections=2)
    held = [await h.acquire(), await h.acquire()]
    q = Queue(h)
    async with anyio.create_task_group() as tg:
        for name, origin in (("b-oldest", B), ("c-next", C), ("a-newer", A), ("b-newest", B)):
            await q.join(tg, name, origin)
        # One at a time: trio shuffles the order in which woken tasks run.
        served = (["b-oldest"], ["b-oldest", "c-next"])
        for conn, fake, expected in zip(held, h.opened[:2], served, strict=True):
            fake.idle = False  # e.g. the response was not read to the end
            await h.pool.release(conn)
            await q.settle()
            assert q.order == expected
        assert [q.got[n].origin for n in q.order] == [B, C]
        assert h.pool.waiting == 2
        h.opened[-1].idle = False  # c-next's connection breaks too: one more slot
        await h.pool.release(q.got["c-next"])
        await q.settle()
        assert q.order == ["b-oldest", "c-next", "a-newer"]
        await h.pool.release(q.got["a-newer"])
        await h.pool.release(q.got["b-oldest"])
    assert q.order == ["b-oldest", "c-next", "a-newer", "b-newest"]
    await h.pool.release(q.got["b-newest"])
    assert ConnectionState.ACTIVE not in h.states()


async def test_pool_oldest_waiter_of_another_key_gets_the_slot_once_bypasses_are_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With no bypass left (MAX_BYPASSES=0), strict FIFO across keys: the freed A connection
    # is closed to make room for B, which has waited longest. (With bypasses left, the
    # younger A waiter goes first: tests/test_pool_partition_handoff.py.)
    monkeypatch.setattr(_pool, "MAX_BYPASSES", 0)
    h = Harness(max_connections=1)
    held = await h.acquire(A)
    q = Queue(h)
    async with anyio.create_task_group() as tg:
        await q.join(tg, "wants-b", B)
        await q.join(tg, "wants-a", A)
        await h.pool.release(held)  # an A connection is freed, but B has waited longest
        await q.settle()
        assert q.order == ["wants-b"]
        assert q.got["wants-b"].origin == B
        assert h.opened[0].closed  # the A connection made room for B
        await h.pool.release(q.got["wants-b"])
    assert q.order == ["wants-b", "wants-a"]
    assert q.got["wants-a"].origin == A
    await h.pool.release(q.got["wants-a"])


async def test_pool_younger_waiter_of_the_freed_key_goes_before_an_older_other_key() -> None:
    h = Harness(max_connections=1)
    held = await h.acquire(A)
    q = Queue(h)
    async with anyio.create_task_group() as tg:
        await q.join(tg, "wants-b", B)
        await q.join(tg, "wants-a", A)
        await h.pool.release(held)
        await q.settle()
        assert q.order == ["wants-a"]
        assert q.got["wants-a"].conn_id == held.conn_id  # reused, not reopened
        await h.pool.release(q.got["wants-a"])
    assert q.order == ["wants-a", "wants-b"]
    assert len(h.opened) == 2
    await h.pool.release(q.got["wants-b"])


async def test_pool_freed_reservation_goes_to_the_oldest_waiter() -> None:
    h = Harness(max_connections=1)
    flow = Flow()
    token = current_flow.set(flow)
    reserved = await h.acquire()
    await h.pool.release(reserved)
    current_flow.reset(token)
    q = Queue(h)
    async with anyio.create_task_group() as tg:
        await q.join(tg, "first")
        await q.join(tg, "second")
        assert flow.end() == []
        await q.settle()
        assert q.order == ["first"]
        assert q.got["first"].conn_id == reserved.conn_id
        await h.pool.release(q.got["first"])
    assert q.order == ["first", "second"]


# The fake clock: keep-alive expiry and the pool timeout.


async def test_pool_keepalive_expiry_follows_the_pool_clock() -> None:
    clock = FakeClock()
    h = Harness(keepalive_expiry=5.0, clock=clock)
    old = await h.acquire(A)
    await h.pool.release(old)
    clock.now += 4.999
    young = await h.acquire(B)  # the sweep runs on every pick: A is not old enough yet
    assert not h.opened[0].closed
    await h.pool.release(young)
    clock.now += 0.001  # A has now been idle exactly keepalive_expiry seconds
    again = await h.acquire(C)
    assert h.opened[0].closed
    assert not h.opened[1].closed  # B, idle for 0.001 s, stays
    assert [info.origin for info in h.pool.connections] == ["http://b.test:80", "http://c.test:80"]
    await h.pool.release(again)


async def test_pool_keepalive_sweep_closes_every_expired_connection_and_no_young_one() -> None:
    clock = FakeClock()
    h = Harness(keepalive_expiry=10.0, max_keepalive_connections=None, clock=clock)
    conns = [await h.acquire(A) for _ in range(4)]
    for i, conn in enumerate(conns):
        await h.pool.release(conn)
        clock.now += 3.0 if i < 2 else 0.0  # released at 0, 3, 6, 6
    clock.now = 1000.0 + 13.5  # idle 13.5 s and 10.5 s (past 10 s), then 7.5 s twice
    fresh = await h.acquire(A)
    assert [fake.closed for fake in h.opened] == [True, True, False, False]
    # LIFO among the survivors: the most recently released one.
    assert fresh.conn_id == conns[3].conn_id
    await h.pool.release(fresh)


async def test_pool_expired_connection_is_not_reused_even_when_it_is_the_only_one() -> None:
    clock = FakeClock()
    h = Harness(max_connections=1, keepalive_expiry=1.0, clock=clock)
    conn = await h.acquire(A)
    await h.pool.release(conn)
    clock.now += 1.5
    again = await h.acquire(A)
    assert again.conn_id != conn.conn_id
    assert h.opened[0].closed
    assert len(h.opened) == 2


async def test_pool_timeout_deadline_is_read_from_the_pool_clock() -> None:
    # The deadline is fixed when the request arrives; time spent before it starts to wait
    # counts. The clock jumps past the deadline between the two readings, so the wait ends at
    # once (a pool reading the wall clock instead would wait the whole hour).
    readings = iter([0.0, 3601.0])

    def clock() -> float:
        return next(readings, 3601.0)

    h = Harness(max_connections=1, clock=clock)
    held = await h.acquire()
    with anyio.fail_after(30), pytest.raises(PoolTimeout, match="pool timeout"):  # hang guard
        await h.acquire(timeout=3600)
    assert h.pool.waiting == 0
    await h.pool.release(held)
    assert h.states() == [ConnectionState.IDLE]


# A waiter handed a connection just as it gives up.


async def test_pool_waiter_cancelled_after_being_handed_a_connection_gives_it_back() -> None:
    h = Harness(max_connections=1)
    held = await h.acquire()
    q = Queue(h)
    kept: list[PooledConnection] = []
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def doomed() -> None:
            got = None
            with scope:
                got = await h.acquire()
            if got is not None:  # trio: the hand-off won the race, the caller owns it
                kept.append(got)
                await h.pool.release(got)

        tg.start_soon(doomed)
        await anyio.wait_all_tasks_blocked()
        await q.join(tg, "next")
        # Hand the connection to `doomed`, then cancel it before it runs: whoever ends up
        # with the connection, it is not lost, and the next waiter gets it.
        await h.pool.release(held)
        scope.cancel()
        await q.settle()
        assert q.order == ["next"]
        assert q.got["next"].conn_id == held.conn_id
        await h.pool.release(q.got["next"])
    assert h.states() == [ConnectionState.IDLE]
    assert h.pool.waiting == 0
    assert len(h.opened) == 1


async def test_pool_waiter_cancelled_after_being_granted_a_slot_frees_the_slot() -> None:
    # The slot (no connection opened yet) goes back: the next waiter may open one.
    h = Harness(max_connections=1)
    held = await h.acquire()
    q = Queue(h)
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def doomed() -> None:
            got = None
            with scope:
                got = await h.acquire(B)
            if got is not None:  # trio: the grant won the race, the caller owns it
                await h.pool.release(got)

        tg.start_soon(doomed)
        await anyio.wait_all_tasks_blocked()
        await q.join(tg, "next", C)
        h.opened[0].idle = False
        await h.pool.release(held)  # closed: its capacity goes to `doomed` (wants B)
        scope.cancel()
        await q.settle()
        assert q.order == ["next"]
        assert q.got["next"].origin == C
        await h.pool.release(q.got["next"])
    assert h.pool.waiting == 0
    assert ConnectionState.ACTIVE not in h.states()
    assert h.opened[0].origin == A
    assert h.opened[-1].origin == C


async def test_pool_waiter_timing_out_as_it_is_handed_a_connection_gives_it_back() -> None:
    # The hand-off and the timeout land in the same loop iteration: the waiter has been
    # woken (woken=True) but its wait raises TimeoutError. The connection must not be lost.
    clock = FakeClock()
    h = Harness(max_connections=1, clock=clock)
    held = await h.acquire()
    waiter_errors: list[BaseException] = []

    async def timing_out() -> None:
        try:
            got = await h.acquire(timeout=0)
        except PoolTimeout as exc:
            waiter_errors.append(exc)
        else:
            await h.pool.release(got)

    async with anyio.create_task_group() as tg:
        # timeout=0 makes the wait raise on its first turn; the release below happens before
        # that turn, so the waiter is both handed the connection and timed out.
        tg.start_soon(timing_out)
        for _ in range(3):
            if h.pool.waiting:
                break
            await anyio.lowlevel.checkpoint()
        await h.pool.release(held)
    states = h.states()
    assert states == [ConnectionState.IDLE], states
    assert h.pool.waiting == 0
    # Either it got the connection before the timer fired, or it timed out and gave it back.
    if waiter_errors:
        assert len(h.opened) == 1


# The pool closing under a request.


async def test_pool_closed_while_a_connection_opens() -> None:
    opening = anyio.Event()
    proceed = anyio.Event()
    opened: list[FakeConnection] = []

    async def connect(origin: httpcore.Origin, request: httpcore.Request) -> FakeConnection:
        opening.set()
        await proceed.wait()
        conn = FakeConnection(origin)
        opened.append(conn)
        return conn

    pool = ConnectionPool(connect)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    async def request() -> None:
        try:
            await pool.acquire(REQUEST, A)
        except PoolClosed as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await opening.wait()
        await pool.aclose()
        proceed.set()
    assert len(errors) == 1
    assert "closed while connecting" in str(errors[0])
    assert opened[0].closed  # the socket that arrived too late is not leaked
    assert pool.connections == []


async def test_pool_release_after_the_pool_closed_is_harmless() -> None:
    h = Harness()
    conn = await h.acquire()
    await h.pool.aclose()
    assert h.opened[0].closed
    await h.pool.release(conn)  # e.g. a response closed after the client
    assert h.pool.connections == []
    assert conn.state is ConnectionState.CLOSED


async def test_pool_connection_released_while_closing_is_closed_not_parked() -> None:
    # release() between `_closed = True` and the close of every connection: a connection
    # the pool no longer tracks must not come back as IDLE.
    h = Harness()
    conn = await h.acquire()
    h.pool._closed = True  # the state aclose() is in while it awaits the closes
    assert h.pool.release_nowait(conn) == [h.opened[0]]
    assert conn.state is ConnectionState.CLOSED
    assert h.pool.connections == []


async def test_pool_closed_while_a_waiter_is_handed_a_reservation_freed_by_flow_end() -> None:
    h = Harness(max_connections=1)
    flow = Flow()
    token = current_flow.set(flow)
    reserved = await h.acquire()
    await h.pool.release(reserved)
    current_flow.reset(token)
    await h.pool.aclose()
    assert flow.end() == []  # the pool already closed it: nothing to hand on or close
    assert h.opened[0].closed
