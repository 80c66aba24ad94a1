"""The sync pool's waits, in threads: what the generated twins of the pool tests leave out
(their tasks wait on each other, which threads have no twin of). Two requests pinned to one
busy connection, a pin waiter of the flow that releases or of another flow, a reservation
that expired while another thread waits, the pool closed while a thread connects, a waiting
thread interrupted just as it is handed a connection, and closes that are interrupted. Fake
connections behind the pool's Protocol seam (tests/sync/test_pool.py); a thread is known to be
queued when the pool counts it (``pool.waiting``), never by sleeping."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable

import httpcore
import pytest

from httpx_extensions import ConnectionState, PoolClosed
from httpx_extensions._sync._pool import (
    ConnectionPool,
    Flow,
    PooledConnection,
    close_all,
    current_flow,
)

from .sync.test_pool import REQUEST, A, B, FakeConnection, Harness

# A guard against a hang (a lost wake-up), not a measurement.
GUARD = 30.0


class Worker(threading.Thread):
    """Runs ``fn`` in a thread (in a copy of this thread's context, so a flow set here is
    its flow too) and keeps what it returned or raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self._context = contextvars.copy_context()
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._context.run(self._fn)
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> object:
        self.join(GUARD)
        assert not self.is_alive(), "the thread never finished"
        if self.error is not None:
            raise self.error
        return self.result


def until_waiting(pool: ConnectionPool, n: int, *workers: Worker) -> None:
    """Until ``n`` requests are queued in ``pool`` (each worker still alive, or it failed)."""
    done = threading.Event()
    while pool.waiting < n:
        for worker in workers:
            assert worker.is_alive(), f"{worker} ended before queueing: {worker.error!r}"
        done.wait(0.005)  # a poll of the pool's count, not an ordering sleep


class RaisingClose(FakeConnection):
    """A connection whose close raises ``error`` (after closing, and after ``during``)."""

    def __init__(
        self,
        origin: httpcore.Origin,
        error: BaseException,
        during: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(origin)
        self.error = error
        self.during = during

    def close(self) -> None:
        super().close()
        self.during()
        raise self.error


def test_sync_cov_pool_interrupted_close_closes_the_rest_then_raises() -> None:
    first, broken, last = FakeConnection(A), RaisingClose(A, KeyboardInterrupt()), FakeConnection(A)
    with pytest.raises(KeyboardInterrupt):
        close_all([first, broken, last])
    assert (first.closed, broken.closed, last.closed) == (True, True, True)


def test_sync_cov_pool_pin_to_a_connection_of_another_origin_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    conn_a = h.acquire(A)
    h.pool.release(conn_a)
    with caplog.at_level(logging.DEBUG, "httpx_extensions.pool"):
        conn_b = h.acquire(B, pin=conn_a.conn_id)
    assert conn_b.origin == B
    assert conn_b.conn_id != conn_a.conn_id
    assert f"conn_id {conn_a.conn_id} serves http://a.test:80" in caplog.text
    h.pool.release(conn_b)
    assert h.states() == [ConnectionState.IDLE, ConnectionState.IDLE]


def test_sync_cov_pool_two_threads_pinned_to_one_busy_connection_are_served_in_order() -> None:
    h = Harness()
    held = h.acquire()
    order: list[str] = []

    def pinned(name: str) -> Callable[[], int]:
        def run() -> int:
            conn = h.acquire(pin=held.conn_id)
            order.append(name)
            h.pool.release(conn)
            return conn.conn_id

        return run

    first = Worker(pinned("first"))
    first.start()
    until_waiting(h.pool, 1, first)
    second = Worker(pinned("second"))
    second.start()
    until_waiting(h.pool, 2, first, second)
    h.pool.release(held)
    assert first.outcome() == second.outcome() == held.conn_id
    assert order == ["first", "second"]
    assert len(h.opened) == 1
    assert h.states() == [ConnectionState.IDLE]
    assert h.pool.waiting == 0


def test_sync_cov_pool_release_hands_the_connection_to_a_pin_waiter_of_the_same_flow() -> None:
    # An event hook's request of the same send() pinned to the connection the send holds: the
    # release hands it over at once rather than reserving it back to the flow.
    h = Harness(max_connections=1)
    flow = Flow()
    token = current_flow.set(flow)
    try:
        held = h.acquire()
        child = Worker(lambda: h.acquire(pin=held.conn_id))
        child.start()
        until_waiting(h.pool, 1, child)
        h.pool.release(held)
        got = child.outcome()
        assert isinstance(got, PooledConnection)
        assert got.conn_id == held.conn_id
        assert got.state is ConnectionState.ACTIVE
        h.pool.release(got)
        assert h.states() == [ConnectionState.RESERVED]  # the flow's, until it ends
    finally:
        current_flow.reset(token)
    close_all(conn for _pool, conns in flow.end() for conn in conns)
    assert h.states() == [ConnectionState.IDLE]


def test_sync_cov_pool_pin_waiter_of_another_flow_waits_for_the_flow_to_end() -> None:
    # A thread pinned to a connection another send() holds: the release reserves it back to
    # that send's flow (its next auth leg goes there); the pinned thread gets it when the
    # flow ends, and not before.
    h = Harness()
    flow = Flow()
    token = current_flow.set(flow)
    try:
        held = h.acquire()
    finally:
        current_flow.reset(token)
    other = Worker(lambda: h.acquire(pin=held.conn_id))  # no flow of its own
    other.start()
    until_waiting(h.pool, 1, other)
    h.pool.release(held)
    assert h.states() == [ConnectionState.RESERVED]
    assert h.pool.waiting == 1
    assert other.is_alive()
    close_all(conn for _pool, conns in flow.end() for conn in conns)
    got = other.outcome()
    assert isinstance(got, PooledConnection)
    assert got.conn_id == held.conn_id
    h.pool.release(got)
    assert h.states() == [ConnectionState.IDLE]
    assert len(h.opened) == 1


def test_sync_cov_pool_reservation_expired_while_a_thread_waits_is_not_handed_over() -> None:
    h = Harness(max_connections=1)
    flow = Flow()
    token = current_flow.set(flow)
    try:
        reserved = h.acquire()
        h.pool.release(reserved)  # RESERVED to the flow, which goes on
    finally:
        current_flow.reset(token)
    other = Worker(h.acquire)
    other.start()
    until_waiting(h.pool, 1, other)
    h.opened[0].expired = True  # the server closed it meanwhile
    closing = flow.end()  # the send() ends: what it held is closed, the waiter gets a slot
    assert closing == [(h.pool, [h.opened[0]])]
    close_all(closing[0][1])
    got = other.outcome()
    assert isinstance(got, PooledConnection)
    assert got.conn_id != reserved.conn_id
    assert h.opened[0].closed
    assert len(h.opened) == 2
    h.pool.release(got)
    assert h.states() == [ConnectionState.IDLE]


class BlockingConnect:
    """A connect that tells when it started and proceeds when told, then fails if asked."""

    def __init__(self, fail: bool) -> None:
        self.started = threading.Event()
        self.proceed = threading.Event()
        self.fail = fail
        self.opened: list[FakeConnection] = []

    def __call__(self, origin: httpcore.Origin, request: httpcore.Request) -> FakeConnection:
        self.started.set()
        assert self.proceed.wait(GUARD)
        if self.fail:
            raise httpcore.ConnectError("refused")
        conn = FakeConnection(origin)
        self.opened.append(conn)
        return conn


def test_sync_cov_pool_closed_while_a_thread_connects() -> None:
    connect = BlockingConnect(fail=False)
    pool = ConnectionPool(connect)  # type: ignore[arg-type]
    worker = Worker(lambda: pool.acquire(REQUEST, A))
    worker.start()
    assert connect.started.wait(GUARD)
    pool.close()
    connect.proceed.set()
    with pytest.raises(PoolClosed, match="closed while connecting"):
        worker.outcome()
    assert connect.opened[0].closed  # the connection that came too late is not left open
    assert pool.connections == []


def test_sync_cov_pool_connect_failing_after_the_pool_closed_raises_the_connect_error() -> None:
    connect = BlockingConnect(fail=True)
    pool = ConnectionPool(connect)  # type: ignore[arg-type]
    worker = Worker(lambda: pool.acquire(REQUEST, A))
    worker.start()
    assert connect.started.wait(GUARD)
    pool.close()
    connect.proceed.set()
    with pytest.raises(httpcore.ConnectError, match="refused"):
        worker.outcome()
    assert pool.connections == []
    pool.close()  # a second close is harmless
    with pytest.raises(PoolClosed):
        pool.acquire(REQUEST, A)


class InterruptingClock:
    """The pool's clock: on its ``fire_on``-th reading, runs ``before`` and raises
    KeyboardInterrupt (a Ctrl-C reaching the thread as it starts to wait)."""

    def __init__(self, fire_on: int, before: Callable[[], None] = lambda: None) -> None:
        self.readings = 0
        self.fire_on = fire_on
        self.before = before
        self.fired = False

    def __call__(self) -> float:
        self.readings += 1
        if self.readings == self.fire_on:
            self.fired = True
            self.before()
            raise KeyboardInterrupt
        return 0.0


@pytest.mark.parametrize("handed", [False, True])
def test_sync_cov_pool_waiter_interrupted_as_it_waits_leaves_nothing_behind(
    handed: bool,
) -> None:
    # The clock is read once for the deadline, then as the wait starts: interrupt there,
    # with the held connection handed to the waiter first, or not.
    h = Harness(max_connections=1)
    held = h.acquire()
    clock = InterruptingClock(2, (lambda: h.pool.release(held)) if handed else (lambda: None))
    h.pool._clock = clock
    with pytest.raises(KeyboardInterrupt):
        h.acquire(timeout=10)
    assert clock.fired
    assert h.pool.waiting == 0  # not left in the queue
    if not handed:
        h.pool.release(held)
    # Handed or not, the connection is IDLE for the next request, not held by the interrupted
    # one: the next request reuses it.
    assert h.states() == [ConnectionState.IDLE]
    assert h.acquire().conn_id == held.conn_id
    assert len(h.opened) == 1


def test_sync_cov_pool_interrupted_close_of_an_expired_idle_connection_frees_the_slot() -> None:
    h = Harness(max_connections=1)
    conn = h.acquire()
    h.pool.release(conn)
    broken = RaisingClose(A, KeyboardInterrupt())
    conn.connection = broken  # the idle connection: expired, and its close is interrupted
    broken.expired = True
    with pytest.raises(KeyboardInterrupt):
        h.acquire()
    assert broken.closed
    assert h.pool.connections == []  # neither the dead one nor the slot taken for a new one
    fresh = h.acquire()  # the one slot is free
    assert fresh.conn_id != conn.conn_id
    h.pool.release(fresh)
    assert h.states() == [ConnectionState.IDLE]


@pytest.mark.parametrize("handed", [False, True])
def test_sync_cov_pool_interrupted_close_of_an_expired_pin_leaves_the_queue(
    handed: bool,
) -> None:
    # A send() pins its own reservation, which has expired: dropping it frees a slot that
    # goes to the thread already waiting, so this request queues, and then the close of the
    # expired connection is interrupted (Ctrl-C), with a connection handed to the queued
    # request during the close, or not. The interrupted request leaves the queue and gives
    # back what it was handed; the other thread keeps what it was given.
    h = Harness(max_connections=2)
    held = h.acquire()
    other = Worker(lambda: h.acquire(B))  # made here: in no flow
    flow = Flow()
    token = current_flow.set(flow)
    try:
        mine = h.acquire()
        h.pool.release(mine)  # RESERVED to this flow: no one else may take or evict it
        other.start()
        until_waiting(h.pool, 1, other)
        during = (lambda: h.pool.release(held)) if handed else (lambda: None)
        broken = RaisingClose(A, KeyboardInterrupt(), during)
        broken.expired = True
        mine.connection = broken
        with pytest.raises(KeyboardInterrupt):
            h.acquire(pin=mine.conn_id)
    finally:
        current_flow.reset(token)
    assert broken.closed
    assert h.pool.waiting == 0  # the interrupted request is not left queued
    got = other.outcome()
    assert isinstance(got, PooledConnection)
    assert got.origin == B
    assert flow.end() == []
    h.pool.release(got)
    if handed:  # given back by the interrupted request: IDLE, not ACTIVE for no one
        assert held.state is ConnectionState.IDLE
    else:
        h.pool.release(held)
    assert h.states() == [ConnectionState.IDLE, ConnectionState.IDLE]
