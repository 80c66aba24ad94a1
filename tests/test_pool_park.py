"""A connection parked for its own key is not kept from the oldest waiter for long.

When a connection frees, nobody of its key (identity) waits, and the oldest waiter's key has
connections of its own open, the pool parks the freed connection IDLE for its key rather than
close it to open one for that waiter (tests/test_pool_partition_handoff.py). Those connections
need not come back: the waiter's own caller may hold them (an open stream) while it waits for
a second request. So a parked connection that nobody of its key claims within
``PARK_BOUND`` is closed, and its slot goes to the oldest waiter, as without parking.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest

from httpx_extensions import CONN_ID, ExClient, NTLMAuth, _pool
from httpx_extensions._pool import ConnectionState, PooledConnection, _Waiter
from httpx_extensions._synchronization import AsyncWakeUp, SyncWakeUp

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file
from .test_pool import A, Harness

pytestmark = pytest.mark.anyio

USERS = [("EXAMPLE", "alice", "Passw0rd"), ("EXAMPLE", "bob", "hunter2")]


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("park") / "users.txt", USERS, store_hashes=True)


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


def _signal_queued(pool: _pool.ConnectionPool, monkeypatch: pytest.MonkeyPatch) -> anyio.Event:
    """An event set when a request joins the pool's queue (no polling)."""
    queued = anyio.Event()
    enqueue = pool._enqueue

    def signal(waiter: _Waiter) -> None:
        enqueue(waiter)
        queued.set()

    monkeypatch.setattr(pool, "_enqueue", signal)
    return queued


async def test_pool_park_caller_holding_its_keys_only_connection_gets_a_slot(
    iis: IISLikeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = (NTLMAuth(f"{d}\\{u}", p) for d, u, p in USERS)
    url = iis.url + "/data"
    # A generous pool timeout: the request must not need it.
    async with ExClient(
        limits=httpx.Limits(max_connections=2), timeout=httpx.Timeout(10.0)
    ) as client:
        queued = _signal_queued(client._transport.pool, monkeypatch)  # type: ignore[attr-defined]
        alice_open = anyio.Event()
        alice_conn: list[int] = []

        async def alice_streams_until_bob_waits() -> None:
            async with client.stream("GET", url, auth=alice) as response:
                alice_conn.append(response.extensions[CONN_ID])
                alice_open.set()
                await queued.wait()
            # Closed: its connection frees while bob waits, and nobody of alice asks again.

        async with client.stream("GET", url, auth=bob) as first:  # bob's only connection
            async with anyio.create_task_group() as tg:
                tg.start_soon(alice_streams_until_bob_waits)
                await alice_open.wait()
                # The pool is full (bob's stream, alice's): this waits while this very task
                # holds bob's only connection. alice's, parked for alice, must come to it.
                second = await client.get(url, auth=bob)
            assert (second.status_code, second.json()["user"]) == (200, "EXAMPLE\\bob")
            assert second.extensions[CONN_ID] not in (first.extensions[CONN_ID], alice_conn[0])
            assert alice_conn[0] not in {info.conn_id for info in client.connections}
        assert_pool_clean(client)
        assert [info.partition is not None for info in client.connections] == [True, True]
    assert iis.connections_opened == 3  # alice's connection closed, one opened for bob


# The pool alone (fake connections): who keeps the parking bound, and who gets the slot.


class _Waiting:
    """Requests for partitions, queued one at a time (so their order is known), each with a
    generous pool timeout and a cancel scope of its own."""

    def __init__(self, h: Harness, tg: anyio.abc.TaskGroup) -> None:
        self.h, self.tg = h, tg
        self.served: dict[str, PooledConnection] = {}
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.changed = anyio.Event()

    async def add(self, name: str, partition: str) -> None:
        scope = self.scopes[name] = anyio.CancelScope()

        async def wait() -> None:
            with scope:
                self.served[name] = await self.h.acquire(A, partition=partition, timeout=10.0)
                self.changed.set()

        before = self.h.pool.waiting
        self.tg.start_soon(wait)
        while self.h.pool.waiting == before:  # checkpoints, no clock
            await anyio.lowlevel.checkpoint()

    async def next_served(self) -> tuple[str, PooledConnection]:
        count = len(self.served)
        while len(self.served) == count:
            self.changed = anyio.Event()
            await self.changed.wait()
        name = list(self.served)[-1]
        return name, self.served[name]


async def test_pool_park_unclaimed_slot_goes_to_the_oldest_waiter_not_the_one_keeping_time() -> (
    None
):
    h = Harness(max_connections=2)
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    async with anyio.create_task_group() as tg:
        waiting = _Waiting(h, tg)
        await waiting.add("bob-2", "bob")  # the oldest
        await waiting.add("carol", "carol")  # the youngest: it keeps the parking bound
        await h.pool.release(alice)  # parked for alice: bob has a connection open
        assert waiting.served == {}
        name, conn = await waiting.next_served()  # nobody of alice asks: after the bound
        assert (name, conn.partition) == ("bob-2", "bob")
        assert conn is not bob
        assert h.opened[0].closed  # alice's, closed for bob-2's slot
        assert h.pool.waiting == 1  # carol still waits: its turn is next
        await h.pool.release(bob)  # nobody of bob waits, carol has none: carol's slot
        name, conn = await waiting.next_served()
        assert (name, conn.partition) == ("carol", "carol")
        for conn in waiting.served.values():
            await h.pool.release(conn)
    assert [(i.partition, i.state) for i in h.pool.connections] == [
        ("bob", ConnectionState.IDLE),
        ("carol", ConnectionState.IDLE),
    ]
    assert h.pool._watcher is None


async def test_pool_park_bound_is_kept_by_another_waiter_when_the_keeper_gives_up() -> None:
    h = Harness(max_connections=2)
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    async with anyio.create_task_group() as tg:
        waiting = _Waiting(h, tg)
        await waiting.add("bob-2", "bob")
        await waiting.add("bob-3", "bob")  # the youngest: it keeps the parking bound
        await h.pool.release(alice)  # parked
        waiting.scopes["bob-3"].cancel()  # it gives up before the bound: bob-2 takes over
        name, conn = await waiting.next_served()
        assert (name, conn.partition) == ("bob-2", "bob")
        assert h.opened[0].closed
        assert h.pool.waiting == 0
        await h.pool.release(conn)
        await h.pool.release(bob)
    assert [i.state for i in h.pool.connections] == [ConnectionState.IDLE] * 2


async def test_pool_park_connection_claimed_within_the_bound_stays_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Claimed first however slowly this runs; the watcher then finds nothing left to close.
    monkeypatch.setattr(_pool, "PARK_BOUND", 0.0)
    h = Harness(max_connections=2)
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    async with anyio.create_task_group() as tg:
        waiting = _Waiting(h, tg)
        await waiting.add("bob-2", "bob")
        await h.pool.release(alice)  # parked; the watcher runs at our next checkpoint
        again = await h.acquire(A, partition="alice", timeout=0)  # no checkpoint before
        assert again is alice
        await anyio.lowlevel.checkpoint()
        assert h.pool.waiting == 1  # nothing to unpark: bob-2 waits for bob's connection
        await h.pool.release(bob)
        name, conn = await waiting.next_served()
        assert (name, conn) == ("bob-2", bob)
        await h.pool.release(conn)
        await h.pool.release(again)
    assert not any(c.closed for c in h.opened)
    assert h.pool._watcher is None


async def test_pool_park_watcher_gives_up_at_its_own_deadline_before_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_pool, "PARK_BOUND", 3600.0)
    h = Harness(max_connections=2)
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    errors: list[BaseException] = []
    gave_up = anyio.Event()

    async def bob_2() -> None:
        try:
            await h.acquire(A, partition="bob", timeout=0.2)
        except _pool.PoolTimeout as exc:
            errors.append(exc)
        gave_up.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(bob_2)
        while h.pool.waiting == 0:
            await anyio.lowlevel.checkpoint()
        await h.pool.release(alice)  # parked; bob-2 keeps its bound, an hour away
        await gave_up.wait()  # its own pool timeout still ends its wait
    assert len(errors) == 1
    assert h.pool._watcher is None
    assert [i.state for i in h.pool.connections] == [ConnectionState.IDLE, ConnectionState.ACTIVE]
    await h.pool.release(bob)


# The re-armable wake-up of one waiter.


async def test_pool_park_wake_up_nudged_ends_one_wait_then_waits_again() -> None:
    wake_up = AsyncWakeUp()
    clock = time.monotonic
    keeper = _pool.ConnectionPool(Harness().connect)._deadlines_on  # type: ignore[arg-type]
    wake_up.nudge()
    await wake_up.wait(None, keeper, clock)  # ended by the nudge
    wake_up.rearm()
    with pytest.raises(TimeoutError):  # the nudge is spent: this one waits (until its deadline)
        await wake_up.wait(clock(), keeper, clock)
    wake_up.rearm()  # after a timeout too
    wake_up.wake()
    await wake_up.wait(None, keeper, clock)  # woken for good


def test_pool_park_sync_wake_up_nudged_ends_one_wait_then_waits_again() -> None:
    wake_up = SyncWakeUp()
    clock = time.monotonic
    wake_up.nudge()
    wake_up.wait(None, None, clock)
    wake_up.rearm()
    with pytest.raises(TimeoutError):
        wake_up.wait(clock(), None, clock)
    wake_up.rearm()
    wake_up.wake()
    wake_up.wait(None, None, clock)
