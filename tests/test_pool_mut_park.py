"""Pool behaviour that `scripts/mutate pool` found untested, the parking code's among it.

Each test names the user-visible rule it holds; the pool runs with fake connections behind its
Protocol seam (tests/test_pool.py's Harness), order is shown with anyio's task scheduling, and
time, where it matters, comes from the pool's injectable clock.
"""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest

from httpx_extensions import _pool
from httpx_extensions._pool import (
    ConnectionState,
    Flow,
    PooledConnection,
    close_all,
    current_flow,
)

from .test_pool import A, Harness
from .test_pool_handoff import FakeClock
from .test_pool_park import _Waiting
from .test_pool_paths import InFlow

pytestmark = pytest.mark.anyio


def _busy(h: Harness) -> list[ConnectionState]:
    """What assert_pool_clean (tests/conftest.py) forbids once every request is done."""
    busy = (ConnectionState.ACTIVE, ConnectionState.RESERVED, ConnectionState.CONNECTING)
    return [state for state in h.states() if state in busy]


async def test_pool_mut_expired_pin_frees_its_slot_for_a_queued_request_at_once() -> None:
    # A flow holds both connections of a full pool (reserved between its legs); bob's request
    # queues. The flow's next leg pins a connection the server has closed meanwhile: that slot
    # is free now, and bob, not the flow's later release, must get it.
    h = Harness(max_connections=2)
    served: list[PooledConnection] = []
    with InFlow() as flow:
        first, second = await h.acquire(A), await h.acquire(A)
        await h.pool.release(first)
        await h.pool.release(second)
        assert [c.state for c in (first, second)] == [ConnectionState.RESERVED] * 2

        async def bob() -> None:
            token = current_flow.set(None)  # another caller, in no flow
            try:
                served.append(await h.acquire(A, partition="bob", timeout=10.0))
            finally:
                current_flow.reset(token)

        async with anyio.create_task_group() as tg:
            tg.start_soon(bob)
            await anyio.wait_all_tasks_blocked()
            assert h.pool.waiting == 1
            assert first.connection is not None
            first.connection.expired = True  # type: ignore[attr-defined]
            leg = await h.acquire(A, pin=first.conn_id)  # falls back to the other reservation
            assert leg is second
            await anyio.wait_all_tasks_blocked()
            # While the flow still holds its other connection, bob has a new one.
            assert [c.partition for c in served] == ["bob"]
            assert served[0] not in (first, second)
            await h.pool.release(leg)
        await h.pool.release(served[0])
    await _end(flow)
    assert h.pool.waiting == 0
    assert _busy(h) == []
    assert h.opened[0].closed  # the expired one, closed when the pin fell back


async def _end(flow: Flow) -> None:
    """End a flow as ExClient.send() does when it returns."""
    for _owner, conns in flow.end():
        await close_all(conns)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pool_mut_native_cancel_of_a_request_just_granted_a_slot_passes_it_on() -> None:
    # asyncio's own task.cancel() (asyncio.timeout, wait_for) lands even after the queued
    # request was granted a slot (a connection not opened yet). The slot must go to the next
    # request in the queue, which then opens its connection, rather than be lost.
    h = Harness(max_connections=1)
    held = await h.acquire(A)
    doomed = asyncio.ensure_future(h.acquire(A, partition="alice"))
    await anyio.wait_all_tasks_blocked()
    bob = asyncio.ensure_future(h.acquire(A, partition="bob", timeout=10.0))
    await anyio.wait_all_tasks_blocked()
    assert h.pool.waiting == 2
    assert held.connection is not None
    held.connection.idle = False  # type: ignore[attr-defined]  # not reusable: closed
    await h.pool.release(held)  # its capacity goes to `doomed`, the oldest
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await anyio.wait_all_tasks_blocked()
    try:
        assert bob.done()
        conn = bob.result()
    finally:
        bob.cancel()
    assert conn.partition == "bob"
    assert [c.origin for c in h.opened] == [A, A]  # held's, then bob's: none for alice
    await h.pool.release(conn)
    assert h.pool.waiting == 0
    assert _busy(h) == []


# Parking (ConnectionPool._free, _watch, _arm, _unpark), on the pool's clock.


class _Untimed(_Waiting):
    """As _Waiting, but with no pool timeout: the fake clock may then jump any distance."""

    async def add(self, name: str, partition: str) -> None:
        scope = self.scopes[name] = anyio.CancelScope()

        async def wait() -> None:
            with scope:
                self.served[name] = await self.h.acquire(A, partition=partition)
                self.changed.set()

        before = self.h.pool.waiting
        self.tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert self.h.pool.waiting == before + 1, f"{name} did not queue"


async def test_pool_mut_park_after_a_claimed_one_is_watched_again() -> None:
    # alice's connection is parked and alice claims it back at once: the waiter keeping the
    # bound finds nothing parked. When alice frees it again and leaves it, the bound must be
    # kept anew, so that bob's queued request gets the slot instead of its pool timeout.
    clock = FakeClock()
    h = Harness(max_connections=2, keepalive_expiry=None, clock=clock)
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    async with anyio.create_task_group() as tg:
        waiting = _Waiting(h, tg)
        await waiting.add("bob-2", "bob")
        await h.pool.release(alice)  # parked for alice: bob has a connection open
        again = await h.acquire(A, partition="alice", timeout=0)  # no checkpoint before
        assert again is alice
        await anyio.wait_all_tasks_blocked()  # bob-2 looks: nothing parked now
        assert waiting.served == {}
        await h.pool.release(again)  # parked once more, and nobody of alice asks again
        clock.now += 1.0  # past PARK_BOUND (bob-2's pool timeout is 10 s away)
        name, conn = await waiting.next_served()
        assert (name, conn.partition) == ("bob-2", "bob")
        assert conn is not bob
        assert h.opened[0].closed  # alice's, closed for bob-2's slot
        await h.pool.release(conn)
    await h.pool.release(bob)
    assert _busy(h) == []
    assert h.pool._watcher is None


async def test_pool_mut_unpark_closes_only_the_connections_unclaimed_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two of alice's connections parked 50 s apart; at 120 s only the first has been
    # unclaimed for PARK_BOUND (100 s). It goes to the oldest waiter; the second stays for
    # alice, whose next request gets it back.
    monkeypatch.setattr(_pool, "PARK_BOUND", 100.0)
    clock = FakeClock()
    h = Harness(max_connections=3, keepalive_expiry=None, clock=clock)
    first = await h.acquire(A, partition="alice")
    second = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    async with anyio.create_task_group() as tg:
        waiting = _Untimed(h, tg)
        await waiting.add("bob-2", "bob")  # the oldest
        await waiting.add("bob-3", "bob")  # the youngest: it keeps the bound
        start = clock.now
        await h.pool.release(first)  # parked at 0 s
        clock.now = start + 50.0
        await h.pool.release(second)  # parked at 50 s
        clock.now = start + 120.0  # (no checkpoint since: bob-3 arms the bound now)
        name, conn = await waiting.next_served()
        assert (name, conn.partition) == ("bob-2", "bob")
        assert [c.closed for c in h.opened[:2]] == [True, False]
        again = await h.acquire(A, partition="alice", timeout=0)
        assert again is second
        assert h.pool.waiting == 1  # bob-3 waits for a bob connection
        await h.pool.release(bob)
        name, got = await waiting.next_served()
        assert (name, got) == ("bob-3", bob)
        for done in (conn, again, got):
            await h.pool.release(done)
    assert _busy(h) == []


async def test_pool_mut_connection_parked_exactly_the_bound_ago_counts_as_unclaimed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As a connection idle exactly keepalive_expiry seconds has expired, one parked exactly
    # PARK_BOUND seconds ago is unclaimed: the oldest waiter gets its slot then. (Values exact
    # in binary, so the sums are too; the clock then stands still.)
    monkeypatch.setattr(_pool, "PARK_BOUND", 0.5)
    clock = FakeClock()
    h = Harness(max_connections=2, keepalive_expiry=None, clock=clock)
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    with anyio.fail_after(10):  # a guard: a pool that misses the bound would wait forever
        async with anyio.create_task_group() as tg:
            waiting = _Waiting(h, tg)
            await waiting.add("bob-2", "bob")
            await h.pool.release(alice)  # parked at 1000.0
            clock.now += 0.5  # the bound, to the bit
            name, conn = await waiting.next_served()
            assert (name, conn.partition) == ("bob-2", "bob")
            assert h.opened[0].closed
            await h.pool.release(conn)
    await h.pool.release(bob)
    assert _busy(h) == []


async def test_pool_mut_parks_pass_the_oldest_over_counted_from_when_it_joined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Parking alice's freed connection counts as passing over the oldest waiter (bob-1), at
    # most MAX_BYPASSES times, counted from when bob-1 joined: parks before then do not count.
    monkeypatch.setattr(_pool, "MAX_BYPASSES", 2)
    clock = FakeClock()  # stands still: no park reaches PARK_BOUND here
    h = Harness(max_connections=2, keepalive_expiry=None, clock=clock)
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")

    async def park_and_reclaim() -> None:
        await h.pool.release(alice)
        assert alice.state is ConnectionState.IDLE  # parked for alice
        assert await h.acquire(A, partition="alice", timeout=0) is alice  # no checkpoint

    async with anyio.create_task_group() as tg:
        waiting = _Untimed(h, tg)
        await waiting.add("bob-0", "bob")
        for _ in range(2):  # two passes over bob-0
            await park_and_reclaim()
        await h.pool.release(bob)  # bob-0's own key: handed over in the release
        name, bob = await waiting.next_served()
        assert name == "bob-0"
        await waiting.add("bob-1", "bob")  # joins after two passes
        for _ in range(2):  # its own two
            await park_and_reclaim()
            assert h.pool.waiting == 1
        await h.pool.release(alice)  # the third: bob-1 has had its share and gets the slot
        assert alice.state is ConnectionState.CLOSED
        name, conn = await waiting.next_served()
        assert (name, conn.partition) == ("bob-1", "bob")
        assert conn is not bob
        await h.pool.release(conn)
    await h.pool.release(bob)
    assert _busy(h) == []


async def test_pool_mut_key_whose_connections_all_closed_gets_the_freed_slot_at_once() -> None:
    # bob's two connections were closed (not reusable). When alice's connection frees, bob's
    # queued request has no connection of its own that could come back: it gets the slot in
    # that release, not after a parking bound (the clock stands still: it would never pass).
    clock = FakeClock()
    h = Harness(max_connections=3, keepalive_expiry=None, clock=clock)
    bobs = [await h.acquire(A, partition="bob") for _ in range(2)]
    alice = await h.acquire(A, partition="alice")
    for conn in bobs:
        assert conn.connection is not None
        conn.connection.idle = False  # type: ignore[attr-defined]
        await h.pool.release(conn)
    carols = [await h.acquire(A, partition="carol") for _ in range(2)]
    async with anyio.create_task_group() as tg:
        waiting = _Untimed(h, tg)
        await waiting.add("bob", "bob")  # the pool is full: alice's and carol's
        await h.pool.release(alice)
        assert h.pool.waiting == 0  # handed over in the release itself
        assert alice.state is ConnectionState.CLOSED
        name, conn = await waiting.next_served()
        assert (name, conn.partition) == ("bob", "bob")
        await h.pool.release(conn)
    for conn in carols:
        await h.pool.release(conn)
    assert _busy(h) == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pool_mut_served_waits_leave_no_deadline_behind() -> None:
    # On asyncio a queued request's pool timeout is one entry in the pool's shared deadline
    # keeper (_network.Deadlines), which passes over finished futures without dropping them:
    # a wait that ends must remove its own entry, or a long-lived client keeps every queued
    # request's future it ever served (found by `scripts/mutate sync`).
    h = Harness(max_connections=1)
    conn = await h.acquire(A)
    served: list[PooledConnection] = []

    async def request() -> None:
        got = await h.acquire(A, timeout=60.0)
        served.append(got)
        await h.pool.release(got)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(request)
        await anyio.wait_all_tasks_blocked()
        assert h.pool.waiting == 3
        deadlines = h.pool._deadlines
        assert deadlines is not None
        assert len(deadlines._entries) == 3  # each wait's timeout kept, one timer for all
        await h.pool.release(conn)
    assert served == [conn] * 3
    assert len(deadlines._entries) == 0


async def test_pool_mut_closes_finish_inside_a_cancelled_scope() -> None:
    # A request cancelled by its caller's cancel scope (anyio.fail_after, a task group
    # cancelling) still closes the connections it drops: a close that awaits (a TLS
    # close_notify, a drain) runs to the end instead of being cut at its first checkpoint
    # and leaving the socket open (found by `scripts/mutate sync`: async_shield's shield).
    class SlowClose:
        closed = False

        async def aclose(self) -> None:
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            self.closed = True

    conns = [SlowClose(), SlowClose()]
    with anyio.CancelScope() as scope:
        scope.cancel()
        await close_all(conns)  # type: ignore[arg-type]
    assert [c.closed for c in conns] == [True, True]
