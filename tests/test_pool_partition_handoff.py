"""Who gets a freed connection when waiters want different partitions (identities).

Strict FIFO across keys closes the freed connection and opens one for the oldest waiter
whenever that waiter wants another identity: with two identities sharing a pool it did so on
nearly every hand-off. The pool instead hands the connection to the oldest waiter of its own
key, passing the oldest waiter of all over at most ``MAX_BYPASSES`` times.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest

from httpx_extensions import ExClient, NTLMAuth, _pool
from httpx_extensions._pool import ConnectionState, PooledConnection

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file
from .test_pool import A, Harness

pytestmark = pytest.mark.anyio


async def _queued(h: Harness, count: int) -> None:
    """Let the event loop run until ``count`` requests wait in the pool."""
    # The pool signals nothing when a request queues; checkpoints (no clock) until it has.
    while h.pool.waiting < count:
        await anyio.lowlevel.checkpoint()


class _Queue:
    """Requests for partitions, started one at a time so their queue order is known."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.served: list[tuple[str, PooledConnection]] = []
        self._changed = anyio.Event()

    async def add(self, tg: anyio.abc.TaskGroup, name: str, partition: str) -> None:
        async def wait() -> None:
            conn = await self.h.acquire(A, partition=partition)
            self.served.append((name, conn))
            self._changed.set()

        before = self.h.pool.waiting
        tg.start_soon(wait)
        await _queued(self.h, before + 1)

    async def free_next(self, conn: PooledConnection) -> tuple[str, PooledConnection]:
        """Release ``conn`` and return whoever was served because of it."""
        count = len(self.served)
        waiting = self.h.pool.waiting
        self._changed = anyio.Event()
        await self.h.pool.release(conn)
        assert self.h.pool.waiting == waiting - 1  # handed over in the release itself
        await self._changed.wait()
        assert len(self.served) == count + 1  # exactly one waiter served per freed connection
        return self.served[-1]


async def test_pool_freed_connection_goes_to_a_younger_waiter_of_its_partition() -> None:
    h = Harness(max_connections=1)
    held = await h.acquire(A, partition="alice")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        await queue.add(tg, "bob", "bob")  # the oldest waiter
        await queue.add(tg, "alice-1", "alice")
        await queue.add(tg, "alice-2", "alice")
        name, conn = await queue.free_next(held)
        assert (name, conn.conn_id) == ("alice-1", held.conn_id)  # no reconnect
        name, conn = await queue.free_next(conn)
        assert (name, conn.conn_id) == ("alice-2", held.conn_id)
        # No alice waiter left: the connection is closed and bob gets its slot.
        name, conn = await queue.free_next(conn)
        assert name == "bob"
        assert conn.conn_id != held.conn_id
        assert conn.partition == "bob"
        await h.pool.release(conn)
    assert len(h.opened) == 2
    assert h.opened[0].closed
    assert [info.partition for info in h.pool.connections] == ["bob"]


async def test_pool_oldest_waiter_is_passed_over_at_most_max_bypasses_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_pool, "MAX_BYPASSES", 3)
    h = Harness(max_connections=1)
    conn = await h.acquire(A, partition="alice")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        await queue.add(tg, "bob", "bob")
        for i in range(5):
            await queue.add(tg, f"alice-{i}", "alice")
        served = []
        for _ in range(4):
            name, conn = await queue.free_next(conn)
            served.append(name)
        # Three younger alice requests went first, then bob, although alice requests still
        # wait: bob has had its share of being passed over.
        assert served == ["alice-0", "alice-1", "alice-2", "bob"]
        for _ in range(2):
            name, conn = await queue.free_next(conn)
            served.append(name)
        await h.pool.release(conn)
    assert served[4:] == ["alice-3", "alice-4"]
    assert h.pool.waiting == 0


async def test_pool_bypasses_count_from_when_a_waiter_joined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Hand-offs that passed over others before a waiter queued do not count against it.
    monkeypatch.setattr(_pool, "MAX_BYPASSES", 2)
    h = Harness(max_connections=1)
    conn = await h.acquire(A, partition="alice")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        await queue.add(tg, "bob", "bob")
        await queue.add(tg, "alice-0", "alice")
        await queue.add(tg, "alice-1", "alice")
        served = []
        for _ in range(3):  # two bypasses of bob, then bob
            name, conn = await queue.free_next(conn)
            served.append(name)
        await queue.add(tg, "carol", "carol")  # joins after two bypasses happened
        await queue.add(tg, "bob-2", "bob")
        await queue.add(tg, "bob-3", "bob")
        for _ in range(3):
            name, conn = await queue.free_next(conn)
            served.append(name)
        await h.pool.release(conn)
    assert served == ["alice-0", "alice-1", "bob", "bob-2", "bob-3", "carol"]


async def test_pool_handoff_with_no_waiter_of_the_key_is_fifo() -> None:
    h = Harness(max_connections=1)
    conn = await h.acquire(A, partition="alice")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        for name in ("bob", "carol", "dave"):
            await queue.add(tg, name, name)
        served = []
        for _ in range(3):
            name, conn = await queue.free_next(conn)
            served.append(name)
        await h.pool.release(conn)
    assert served == ["bob", "carol", "dave"]
    assert len(h.opened) == 4  # alice, then a new connection for each of the others


async def test_pool_forgotten_waiter_leaves_its_partition_queue() -> None:
    # A waiter that gives up (pool timeout) must not be handed a connection later.
    h = Harness(max_connections=1)
    conn = await h.acquire(A, partition="alice")
    with pytest.raises(_pool.PoolTimeout):
        await h.acquire(A, partition="alice", timeout=0)
    assert h.pool.waiting == 0
    await h.pool.release(conn)
    assert h.pool._waiters_by_key == {}
    assert [info.state for info in h.pool.connections] == [_pool.ConnectionState.IDLE]


# Parking: a freed connection that no waiter of its key wants, while the oldest waiter's key
# still has connections of its own that will come back to it.


async def test_pool_freed_connection_is_parked_when_the_oldest_waiters_key_has_one() -> None:
    h = Harness(max_connections=2)
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        await queue.add(tg, "bob-2", "bob")
        await h.pool.release(alice)  # nobody of alice waits; bob has a connection in flight
        assert queue.served == []
        assert [(i.partition, i.state) for i in h.pool.connections] == [
            ("alice", ConnectionState.IDLE),
            ("bob", ConnectionState.ACTIVE),
        ]
        # The next alice request (the caller that freed it, as a thread does) finds it.
        again = await h.acquire(A, partition="alice", timeout=0)
        assert again is alice
        name, conn = await queue.free_next(bob)  # bob's own connection comes back to bob-2
        assert (name, conn) == ("bob-2", bob)
        await h.pool.release(conn)
        await h.pool.release(again)
    assert len(h.opened) == 2  # no connection closed to open one for another identity
    assert not any(c.closed for c in h.opened)
    assert {i.state for i in h.pool.connections} == {ConnectionState.IDLE}
    await h.pool.aclose()
    assert h.pool._open_by_key == {}  # keys are forgotten with their last connection


async def test_pool_newcomer_queues_behind_a_waiter_rather_than_evict_a_parked_connection() -> None:
    h = Harness(max_connections=2)
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        await queue.add(tg, "bob-2", "bob")
        await h.pool.release(alice)  # parked
        # carol neither jumps bob-2 nor closes alice's connection: it queues (and here
        # gives up at once).
        with pytest.raises(_pool.PoolTimeout):
            await h.acquire(A, partition="carol", timeout=0)
        assert [i.state for i in h.pool.connections] == [
            ConnectionState.IDLE,
            ConnectionState.ACTIVE,
        ]
        name, conn = await queue.free_next(bob)
        assert name == "bob-2"
        await h.pool.release(conn)
    assert len(h.opened) == 2


async def test_pool_parking_counts_against_the_oldest_waiters_bypasses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_pool, "MAX_BYPASSES", 2)
    h = Harness(max_connections=3)
    alice = [await h.acquire(A, partition="alice") for _ in range(2)]
    bob = await h.acquire(A, partition="bob")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        await queue.add(tg, "bob-2", "bob")
        await h.pool.release(alice[0])  # parked: bob passed over once
        alice[0] = await h.acquire(A, partition="alice", timeout=0)
        await h.pool.release(alice[0])  # parked again: twice
        name, conn = await queue.free_next(alice[1])  # bob's share is used up: its slot
        assert name == "bob-2"
        assert conn.partition == "bob"
        assert conn is not bob
        await h.pool.release(conn)
        await h.pool.release(bob)
    assert [c.closed for c in h.opened] == [False, True, False, False]


async def test_pool_parked_connection_over_the_keepalive_bound_makes_room_for_a_waiter() -> None:
    h = Harness(max_connections=3, max_keepalive_connections=1)
    alice = [await h.acquire(A, partition="alice") for _ in range(2)]
    bob = await h.acquire(A, partition="bob")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        await queue.add(tg, "bob-2", "bob")
        await h.pool.release(alice[0])  # parked
        await h.pool.release(alice[1])  # parked too: one idle too many, the older one closes
        assert h.pool.waiting == 0  # and bob-2 has its slot at once
        await queue._changed.wait()
        name, conn = queue.served[-1]
        assert (name, conn.partition) == ("bob-2", "bob")
        assert [c.closed for c in h.opened] == [True, False, False, False]
        await h.pool.release(conn)
        await h.pool.release(bob)


async def test_pool_parked_connection_that_expires_makes_room_for_the_oldest_waiter() -> None:
    now = [0.0]
    h = Harness(max_connections=2, keepalive_expiry=5.0, clock=lambda: now[0])
    alice = await h.acquire(A, partition="alice")
    bob = await h.acquire(A, partition="bob")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        await queue.add(tg, "bob-2", "bob")
        await h.pool.release(alice)  # parked
        now[0] += 5.0  # the pool's clock, not a sleep
        # A newcomer's pick closes the expired connection; the slot goes to bob-2, who has
        # waited longer, and the newcomer queues (here: gives up at once).
        with pytest.raises(_pool.PoolTimeout):
            await h.acquire(A, partition="carol", timeout=0)
        await queue._changed.wait()
        name, conn = queue.served[-1]
        assert (name, conn.partition) == ("bob-2", "bob")
        await h.pool.release(conn)
        await h.pool.release(bob)
    assert h.opened[0].closed
    assert [i.partition for i in h.pool.connections] == ["bob", "bob"]


# Through the client, against the IIS-like server: identities chosen at random per request.

USERS = [
    ("EXAMPLE", "alice", "Passw0rd"),
    ("EXAMPLE", "bob", "hunter2"),
    ("EXAMPLE", "carol", "c4r0l"),
    ("EXAMPLE", "dave", "d4v3"),
]


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(
        tmp_path_factory.mktemp("handoff") / "users.txt", USERS, store_hashes=True
    )


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


@pytest.mark.parametrize(("identities", "connections"), [(2, 10), (4, 4)])
async def test_pool_interleaved_identities_keep_their_connections(
    iis: IISLikeServer, identities: int, connections: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No request here holds a connection while it waits, so parking needs no time bound to
    # end (MAX_BYPASSES still bounds it); without one, the count below does not depend on how
    # fast this machine runs the event loop. tests/test_pool_park.py tests the bound.
    monkeypatch.setattr(_pool, "PARK_BOUND", 3600.0)
    n, concurrency = 400, 50
    rnd = random.Random(int(os.environ.get("HTTPX_EXT_SEED", "7")))
    chosen = [rnd.randrange(identities) for _ in range(n)]
    auths = [NTLMAuth(f"{d}\\{u}", p) for d, u, p in USERS[:identities]]
    todo = iter(range(n))
    wrong: list[int] = []
    limits = httpx.Limits(max_connections=connections)
    # The pool timeout bounds every request's wait: no identity starves.
    async with ExClient(limits=limits, timeout=httpx.Timeout(10.0)) as client:

        async def worker() -> None:
            for i in todo:
                response = await client.get(iis.url + "/data", auth=auths[chosen[i]])
                if (response.status_code, response.json()["user"]) != (
                    200,
                    f"EXAMPLE\\{USERS[chosen[i]][1]}",
                ):
                    wrong.append(i)

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        assert_pool_clean(client)
    assert wrong == []
    # Strict FIFO across identities opened a connection (and ran a handshake) for about
    # half of these requests; handing connections to waiters of their own identity keeps
    # that to a few dozen.
    assert iis.connections_opened < n // 4, iis.connections_opened
