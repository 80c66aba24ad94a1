"""The reserving connection pool.

How it works
============

Stock pools treat every request alone: when a response is closed its connection goes back to
the pool, and the next request, from any caller, may take it. Connection-bound authentication
(NTLM, Negotiate) breaks under that rule, because the legs of one handshake must share a TCP
connection. This pool adds three ideas on top of an ordinary HTTP/1.1 keep-alive pool.

**Flows.** ``ExClient.send()`` opens a :class:`Flow` (held in a context variable) for the whole
exchange: every auth leg and redirect it makes. When a response inside a live flow is closed,
its connection becomes RESERVED to that flow instead of IDLE, and the flow's next request to
the same (origin, partition) takes it back. When the flow ends, its reservations are freed.

**Pins.** A request whose ``extensions["conn_id"]`` names a connection goes out on that
connection, waiting for it if another request or flow holds it. A pin that cannot be honoured
(connection closed, expired, unknown) is logged once at WARNING and the request takes a normal
pick instead.

**Partitions.** Connections are keyed by ``(origin, partition)``. A request only ever gets a
connection of its own key, so a connection authenticated for one identity is never handed to a
request of another identity, or of none.

States
------
Each connection is in exactly one :class:`ConnectionState`; ``PooledConnection._move`` is the
only place that changes it, and it raises :class:`ConnectionStateError` on a move the table
below does not allow::

    CONNECTING --> ACTIVE --> IDLE --> ACTIVE ...
         |           |  \\              ^
         |           |   +-> RESERVED --+
         v           v          |
       CLOSED <------+----------+ (from any state but CLOSED)

ACTIVE means checked out: handed to one request, in flight, or being handed over. A connection
is marked ACTIVE the moment it is handed out, so nobody else can see it as free.

Cost
----
Decisions are made synchronously, without I/O, so on one event loop they are atomic and need no
lock. Every decision is O(1) amortised: idle connections sit in one LIFO stack per key and in
one age-ordered set; waiters sit in one FIFO queue; a freed connection wakes exactly one waiter.
Nothing scans all queued requests. Connecting and closing happen outside the decisions; closes
are shielded from cancellation.

Limits
------
``max_connections`` counts every open connection, RESERVED ones included, plus ones being
opened. ``max_keepalive_connections`` bounds IDLE connections only. With a full pool, requests
queue FIFO per key. A freed connection goes to the oldest waiter of its own key; when the
oldest waiter of all wants another key (origin or identity), a younger waiter of the freed
connection's key may go first, at most ``MAX_BYPASSES`` times while that oldest waiter waits;
after that (or when nobody can use it) the connection is closed and the oldest waiter gets its
slot. When no waiter of the freed connection's key is queued but the oldest waiter's key has
connections of its own open, the freed one is parked IDLE for its key instead (one more pass
over the oldest): a thread issues its next request right after the last, too late to be queued,
and closing the connection only to reopen one of its key moments later churned. Newcomers of
other keys queue behind the waiters rather than close a parked connection. Unclaimed for
``PARK_BOUND``, a parked connection is closed and the oldest waiter gets its slot after all
(one waiter, the watcher, wakes for that: its caller may hold the oldest's connections itself,
and those never come back while it waits). Strict FIFO across
keys closed and reopened a connection on nearly every hand-off when two identities shared a
pool; the bound keeps every waiter's extra wait finite.

A flow that holds a reservation and needs a connection for another key in a full pool gives
up (closes) its own reservation rather than waiting for one forever; so flows cannot deadlock
each other through reservations.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from contextvars import ContextVar
from typing import Any, Protocol

import httpcore

from ._exceptions import ConnectionStateError, PoolClosed, PoolTimeout
from ._network import Deadlines
from ._state import _TRANSITIONS, ConnectionInfo, ConnectionState
from ._synchronization import AsyncLock, AsyncWakeUp, async_shield

__all__ = [
    "ConnectionInfo",
    "ConnectionLike",
    "ConnectionPool",
    "ConnectionState",
    "Flow",
    "PooledConnection",
    "current_flow",
]

logger = logging.getLogger("httpx_extensions.pool")

# (scheme, host, port, partition): httpcore.Origin itself is not hashable.
PoolKey = tuple[bytes, bytes, int, Hashable]


class ConnectionLike(Protocol):
    """What the pool needs of a connection to keep, check and close it (``HTTP11Connection``)."""

    async def aclose(self) -> None: ...

    def has_expired(self) -> bool: ...

    def is_idle(self) -> bool: ...

    def is_closed(self) -> bool: ...


# The request is passed through to the factory untouched (the transport's httpx.Request).
ConnectFactory = Callable[[httpcore.Origin, Any], Awaitable[ConnectionLike]]


_conn_ids = itertools.count(1)

#: How many times a freed connection may go to a younger waiter of its own key while the
#: oldest waiter wants another key (origin or identity); see ConnectionPool._free.
MAX_BYPASSES = 128

#: Seconds a connection parked for its own key (ConnectionPool._free) may stay unclaimed while
#: others wait; then it is closed and its slot goes to the oldest waiter (_unpark). Parking
#: pays when the caller that freed it asks again at once: a task within a few turns of the
#: event loop, a thread within a few GIL switch intervals (5 ms each) when it is preempted.
#: It costs a waiter whose key's connections do not come back (its own caller holds them) at
#: most this much: about what the close-and-reopen it saves costs on a real network (a TCP
#: connect and a two-leg NTLM handshake: three round trips of a few ms).
PARK_BOUND = 0.02


def _origin_str(origin: httpcore.Origin) -> str:
    return f"{origin.scheme.decode('ascii')}://{origin.host.decode('ascii')}:{origin.port}"


class PooledConnection:
    """One connection of the pool: its id, key, state and the flow that holds it."""

    __slots__ = (
        "_state",
        "conn_id",
        "connection",
        "flow",
        "idle_since",
        "key",
        "origin",
        "pin_waiters",
        "requests",
    )

    def __init__(self, origin: httpcore.Origin, key: PoolKey, flow: Flow | None) -> None:
        self.conn_id = next(_conn_ids)
        self.origin = origin
        self.key = key
        self.flow = flow
        self.connection: ConnectionLike | None = None
        self._state = ConnectionState.CONNECTING
        self.idle_since = 0.0
        self.requests = 0
        self.pin_waiters: deque[_Waiter] | None = None

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def partition(self) -> Hashable:
        return self.key[3]

    def _move(self, new: ConnectionState) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise ConnectionStateError(
                f"connection {self.conn_id} cannot move from {self._state.name} to {new.name}"
            )
        self._state = new

    def is_idle(self) -> bool:
        return self._state is ConnectionState.IDLE

    def is_reserved(self) -> bool:
        return self._state is ConnectionState.RESERVED

    def is_closed(self) -> bool:
        return self._state is ConnectionState.CLOSED

    def has_expired(self) -> bool:
        """True when the server has closed it or its keep-alive time has run out."""
        return self.connection is not None and self.connection.has_expired()

    def info(self) -> ConnectionInfo:
        return ConnectionInfo(
            conn_id=self.conn_id,
            origin=_origin_str(self.origin),
            partition=self.partition,
            state=self._state,
            reserved=self._state is ConnectionState.RESERVED,
            requests=self.requests,
        )

    def __repr__(self) -> str:
        partition = "" if self.partition is None else f", partition={self.partition!r}"
        return (
            f"<PooledConnection conn_id={self.conn_id} [{_origin_str(self.origin)}, "
            f"{self._state.name}{partition}, requests={self.requests}]>"
        )


class Flow:
    """One ``ExClient.send()``: its auth legs and redirects share reserved connections.

    Create one, set it as :data:`current_flow` around the requests that belong together, and
    call :meth:`end` when they are done (``ExClient`` does all of this for you).
    """

    __slots__ = ("_reserved", "live", "parent")

    def __init__(self, parent: Flow | None = None) -> None:
        self.live = True
        # The flow whose send() this one runs inside (an event hook): it cannot progress
        # until we return, so we may evict its reservations rather than wait for them.
        self.parent = parent
        # (pool, key) -> connections RESERVED to this flow; nearly always 0 or 1 entries.
        self._reserved: dict[tuple[ConnectionPool, PoolKey], list[PooledConnection]] = {}

    def _reserve(self, pool: ConnectionPool, conn: PooledConnection) -> None:
        self._reserved.setdefault((pool, conn.key), []).append(conn)

    def _take(self, pool: ConnectionPool, key: PoolKey) -> PooledConnection | None:
        conns = self._reserved.get((pool, key))
        if not conns:
            return None
        conn = conns.pop()
        if not conns:
            del self._reserved[(pool, key)]
        return conn

    def _take_any(self, pool: ConnectionPool) -> PooledConnection | None:
        for pool_key in self._reserved:
            if pool_key[0] is pool:
                return self._take(pool, pool_key[1])
        return None

    def _discard(self, pool: ConnectionPool, conn: PooledConnection) -> None:
        conns = self._reserved[(pool, conn.key)]
        conns.remove(conn)
        if not conns:
            del self._reserved[(pool, conn.key)]

    def end(self) -> list[tuple[ConnectionPool, list[ConnectionLike]]]:
        """Release every reservation. Returns connections to close (see ``close_all``)."""
        self.live = False
        if not self._reserved:
            return []
        closing: list[tuple[ConnectionPool, list[ConnectionLike]]] = []
        for pool in {pool for pool, _key in list(self._reserved)}:
            to_close = pool._end_flow(self)
            if to_close:
                closing.append((pool, to_close))
        return closing

    def __repr__(self) -> str:
        held = sum(len(conns) for conns in self._reserved.values())
        return f"<Flow {'live' if self.live else 'ended'}, {held} reserved>"


current_flow: ContextVar[Flow | None] = ContextVar("httpx_extensions_flow", default=None)


class _Waiter(AsyncWakeUp):
    """A request waiting for a connection (any of its key, or one pinned connection).

    Its wake-up (:class:`AsyncWakeUp`) is its own: a freed connection wakes exactly the one
    waiter it is handed to.
    """

    __slots__ = (
        "conn",
        "error",
        "flow",
        "key",
        "mark",
        "origin",
        "pinned",
        "woken",
    )

    def __init__(self, origin: httpcore.Origin, key: PoolKey, flow: Flow | None) -> None:
        super().__init__()
        self.origin = origin
        self.key = key
        self.flow = flow
        # The pool's bypass count when this waiter joined the queue (see ConnectionPool._free).
        self.mark = 0
        self.conn: PooledConnection | None = None
        self.error: Exception | None = None
        self.pinned: PooledConnection | None = None  # the connection a pinned waiter wants
        self.woken = False

    def wake(self) -> None:
        self.woken = True
        super().wake()


async def close_all(conns: Iterable[ConnectionLike]) -> None:
    """Close connections, shielded from cancellation; a failing close is only logged.

    anyio's shield does not stop a native asyncio ``task.cancel()`` (``asyncio.timeout``,
    ``wait_for``): such a cancellation still closes every connection before it propagates.
    """
    interrupted: BaseException | None = None
    with async_shield():
        for connection in conns:
            try:
                await connection.aclose()
            except Exception as exc:  # a broken socket may complain on close
                logger.debug("error while closing a connection: %r", exc)
            except BaseException as exc:
                interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted


class ConnectionPool:
    """HTTP/1.1 connection pool with flows, pins and partitions.

    Args:
        connect: Opens a connection to an origin (TCP, TLS, proxy tunnel) for a request.
        max_connections: Upper bound on open connections, RESERVED ones included.
        max_keepalive_connections: Upper bound on IDLE connections.
        keepalive_expiry: Seconds an IDLE connection may stay open.
        clock: Where the pool reads the time (seconds, monotonic): keep-alive expiry of
            idle connections and the pool timeout's deadline. Tests pass a fake clock.
    """

    def __init__(
        self,
        connect: ConnectFactory,
        *,
        max_connections: int | None = 100,
        max_keepalive_connections: int | None = 20,
        keepalive_expiry: float | None = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._clock = clock
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive_connections
        self._keepalive_expiry = keepalive_expiry
        self._conns: dict[int, PooledConnection] = {}
        self._idle: dict[PoolKey, OrderedDict[PooledConnection, None]] = {}
        self._idle_by_age: OrderedDict[PooledConnection, None] = OrderedDict()
        # Waiters for any connection of their key: all of them oldest first, and per key.
        self._waiters: OrderedDict[_Waiter, None] = OrderedDict()
        self._waiters_by_key: dict[PoolKey, OrderedDict[_Waiter, None]] = {}
        # How often a freed connection went to a waiter younger than the oldest (_free).
        self._bypasses = 0
        # Open connections (any state but CLOSED) per key: does a waiter's key have one that
        # will come back to the pool (_free)?
        self._open_by_key: dict[PoolKey, int] = {}
        # The waiter that wakes at the oldest parked connection's PARK_BOUND, while
        # connections are parked and requests wait (_watch, _arm, _unpark).
        self._watcher: _Waiter | None = None
        self._deadlines: Deadlines | None = None
        self._closed = False
        # Every decision (which connection, which waiter, what to close) is made under this
        # lock and does no I/O; connects and closes happen outside it. Async: a no-op, as
        # one event loop runs one decision at a time. Sync: one threading.Lock.
        self._lock = AsyncLock()

    # Introspection.

    @property
    def connections(self) -> list[ConnectionInfo]:
        """A snapshot of every open connection, oldest first."""
        with self._lock:
            return [conn.info() for conn in self._conns.values()]

    @property
    def waiting(self) -> int:
        """How many requests are queued for a connection (pinned ones included)."""
        with self._lock:
            pinned = sum(len(c.pin_waiters) for c in self._conns.values() if c.pin_waiters)
            return len(self._waiters) + pinned

    def __repr__(self) -> str:
        counts = dict.fromkeys(ConnectionState, 0)
        with self._lock:
            for conn in self._conns.values():
                counts[conn.state] += 1
        parts = ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n)
        return f"<ConnectionPool [{parts or 'empty'}, {len(self._waiters)} waiting]>"

    # Check-out.

    async def acquire(
        self,
        request: Any,
        origin: httpcore.Origin,
        partition: Hashable = None,
        pin: int | None = None,
        timeout: float | None = None,
        *,
        fresh: bool = False,
    ) -> PooledConnection:
        """Check out a connected connection for ``request``; it is ACTIVE on return.

        With ``fresh``, a new connection is opened rather than one reused, unless the pool is
        full and one is handed over while waiting (used to resend a request that a reused
        connection lost: another connection that sat as long may be just as stale).

        Raises:
            PoolTimeout: nothing became available within ``timeout`` seconds.
            PoolClosed: the pool was closed.
        """
        if self._closed:
            raise PoolClosed("The connection pool was closed; open a new client to send requests.")
        key: PoolKey = (origin.scheme, origin.host, origin.port, partition)
        flow = current_flow.get()
        deadline = None if timeout is None else self._clock() + timeout
        to_close: list[ConnectionLike] = []

        conn: PooledConnection | None = None
        waiter: _Waiter | None = None
        if pin is not None:
            with self._lock:
                conn, waiter = self._pick_pinned(pin, origin, key, flow, to_close)
        while True:
            if conn is None and waiter is None:
                with self._lock:
                    conn = self._pick(origin, key, flow, to_close, fresh)
                    if conn is None:
                        waiter = _Waiter(origin, key, flow)
                        self._enqueue(waiter)
            if to_close:
                await self._close_or_undo(to_close, conn, waiter)
                to_close = []
            if conn is not None:
                break
            assert waiter is not None
            conn = await self._wait(waiter, deadline)
            if self._closed:
                raise PoolClosed("The connection pool was closed while this request waited.")
            if conn is None:  # the pinned connection closed while we waited: pick again
                logger.warning("conn_id %s closed while waiting for it; using another", pin)
                waiter = None

        if conn.connection is None:
            await self._open(conn, request)
        conn.requests += 1
        return conn

    def _pick_pinned(
        self,
        pin: int,
        origin: httpcore.Origin,
        key: PoolKey,
        flow: Flow | None,
        to_close: list[ConnectionLike],
    ) -> tuple[PooledConnection | None, _Waiter | None]:
        conn = self._conns.get(pin)
        if conn is None:
            logger.warning(
                "conn_id %s is not open in this pool (closed or unknown); "
                "sending on another connection",
                pin,
            )
            return None, None
        if conn.key[:3] != key[:3]:
            # Not a warning: httpx copies extensions onto cross-origin redirects.
            logger.debug(
                "conn_id %s serves %s, not this request's origin; ignoring the pin",
                pin,
                _origin_str(conn.origin),
            )
            return None, None
        if conn.partition != key[3]:
            logger.warning(
                "conn_id %s belongs to another partition (identity); "
                "refusing the pin and sending on another connection",
                pin,
            )
            return None, None
        state = conn.state
        if state is ConnectionState.IDLE or (
            state is ConnectionState.RESERVED and conn.flow is flow
        ):
            if conn.has_expired():
                logger.warning(
                    "conn_id %s has expired (closed by the server or idle too "
                    "long); sending on another connection",
                    pin,
                )
                self._detach(conn)
                self._drop(conn, to_close)
                self._grant_slots()
                return None, None
            self._check_out(conn, flow)
            return conn, None
        # ACTIVE, CONNECTING, or RESERVED by another flow: wait for it.
        waiter = _Waiter(origin, key, flow)
        waiter.pinned = conn
        if conn.pin_waiters is None:
            conn.pin_waiters = deque()
        conn.pin_waiters.append(waiter)
        return None, waiter

    def _pick(
        self,
        origin: httpcore.Origin,
        key: PoolKey,
        flow: Flow | None,
        to_close: list[ConnectionLike],
        fresh: bool = False,
    ) -> PooledConnection | None:
        self._expire_oldest_idle(to_close)
        if not fresh:  # fresh: neither a reservation nor an idle connection
            if flow is not None and flow._reserved:
                while (conn := flow._take(self, key)) is not None:
                    if not conn.has_expired():
                        conn._move(ConnectionState.ACTIVE)
                        return conn
                    self._drop(conn, to_close)
            stack = self._idle.get(key)
            while stack:
                conn, _ = stack.popitem()
                del self._idle_by_age[conn]
                if not stack:
                    del self._idle[key]
                if not conn.has_expired():
                    conn._move(ConnectionState.ACTIVE)
                    conn.flow = flow
                    return conn
                self._drop(conn, to_close)
        if self._waiters:
            # A parked connection (see _free) closed above: its slot is the oldest waiter's,
            # not this newcomer's. (Nobody waits while there is room, so this is O(1).)
            self._grant_slots()
        if self._max_connections is None or len(self._conns) < self._max_connections:
            return self._new(origin, key, flow)
        # Full. Close the longest-idle connection of another key, then one of our own
        # reservations, before making anyone wait. Not the idle one while others wait: it is
        # parked for its own key (see _free), and the oldest waiter, not this newcomer, is
        # next in line for a slot.
        if self._idle_by_age and not self._waiters:
            victim, _ = self._idle_by_age.popitem(last=False)
            self._remove_idle(victim)
            self._drop(victim, to_close)
            return self._new(origin, key, flow)
        holder = flow
        while holder is not None:
            if (own := holder._take_any(self)) is not None:
                self._drop(own, to_close)
                return self._new(origin, key, flow)
            holder = holder.parent
        return None

    def _new(self, origin: httpcore.Origin, key: PoolKey, flow: Flow | None) -> PooledConnection:
        conn = PooledConnection(origin, key, flow)
        self._conns[conn.conn_id] = conn
        self._open_by_key[key] = self._open_by_key.get(key, 0) + 1
        return conn

    def _check_out(self, conn: PooledConnection, flow: Flow | None) -> None:
        self._detach(conn)
        conn._move(ConnectionState.ACTIVE)
        conn.flow = flow

    def _detach(self, conn: PooledConnection) -> None:
        """Take a free (IDLE or RESERVED) connection out of the index that holds it."""
        if conn.state is ConnectionState.IDLE:
            self._remove_idle(conn)
        elif conn.state is ConnectionState.RESERVED and conn.flow is not None:
            conn.flow._discard(self, conn)

    async def _open(self, conn: PooledConnection, request: Any) -> None:
        try:
            connection = await self._connect(conn.origin, request)
        except BaseException:
            # Connect failed or was cancelled: give the slot to the next waiter.
            with self._lock:
                if not conn.is_closed():
                    self._drop(conn, [])
                    self._grant_slots()
            raise
        with self._lock:
            conn.connection = connection
            closed = conn.state is ConnectionState.CLOSED  # the pool was closed meanwhile
            if not closed:
                conn._move(ConnectionState.ACTIVE)
        if closed:
            await close_all([connection])
            raise PoolClosed("The connection pool was closed while connecting.")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("opened conn_id %s to %s", conn.conn_id, _origin_str(conn.origin))

    async def _wait(self, waiter: _Waiter, deadline: float | None) -> PooledConnection | None:
        # Until woken with a connection (or a slot). A nudge (_watch) or the parking bound
        # ends a wait early: the waiter looks again at what to wait for (_arm).
        at, parked = deadline, False
        try:
            while True:
                try:
                    await waiter.wait(at, self._deadlines_on, self._clock)
                except TimeoutError:
                    if not parked:  # its own deadline
                        raise
                    to_close = self._unpark()
                    if to_close:
                        await close_all(to_close)
                else:
                    if waiter.woken:
                        break
                with self._lock:
                    if waiter.woken:
                        break
                    waiter.rearm()
                    at, parked = self._arm(waiter, deadline)
        except BaseException as exc:
            with self._lock:
                woken = waiter.woken
                if not woken:
                    self._forget(waiter)
            # Handed a connection just as we gave up: put it back.
            if woken and waiter.conn is not None:
                await self._give_back(waiter.conn)
            if isinstance(exc, TimeoutError):
                raise PoolTimeout(
                    "No connection became available within the pool timeout; raise "
                    "`timeout=httpx.Timeout(..., pool=...)` or `limits.max_connections`."
                ) from None
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.conn

    def _arm(self, waiter: _Waiter, deadline: float | None) -> tuple[float | None, bool]:
        """When ``waiter`` wakes next: at its deadline, or, if it is the watcher, at the oldest
        parked connection's bound when that comes first (then True)."""
        # Only the watcher is nudged or wakes at a bound, and it keeps the role until it
        # leaves the queue or finds nothing parked (below): a woken waiter does not get here.
        if waiter is self._watcher:  # pragma: no branch - see above
            if self._idle_by_age:
                # Every IDLE connection is parked while requests wait: a request that
                # finds the pool full closes an idle one rather than queue (_pick) while
                # nobody waits yet. The oldest is the first to reach its bound.
                bound = next(iter(self._idle_by_age)).idle_since + PARK_BOUND
                if deadline is None or bound < deadline:
                    return bound, True
            else:  # every parked connection was claimed: nothing to watch
                self._watcher = None
        return deadline, False

    def _watch(self) -> None:
        """While connections are parked and requests wait, one waiter keeps the time.

        Called where that starts (a park in _free) and where the watcher leaves (_dequeue). A
        request that queues finds a watcher already, or nothing parked: with nobody queued, a
        request that finds the pool full closes an idle connection rather than wait (_pick).
        """
        if self._watcher is None and self._waiters and self._idle_by_age:
            # The youngest: FIFO serves it last, so the role seldom moves.
            watcher = self._watcher = next(reversed(self._waiters))
            watcher.nudge()  # it may be waiting for its own deadline only

    def _unpark(self) -> list[ConnectionLike]:
        """Close the parked connections nobody of their key claimed within PARK_BOUND: each
        slot goes to the oldest waiter, as it would without parking (_free)."""
        to_close: list[ConnectionLike] = []
        with self._lock:
            limit = self._clock() - PARK_BOUND
            while self._waiters and self._idle_by_age:
                conn = next(iter(self._idle_by_age))
                if conn.idle_since > limit:
                    break
                self._remove_idle(conn)
                self._drop(conn, to_close)
                self._grant_slots()
        return to_close

    def _deadlines_on(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        # Pool timeouts of every queued request share one timer (see Deadlines).
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._deadlines = Deadlines(loop)
        return deadlines

    def _enqueue(self, waiter: _Waiter) -> None:
        waiter.mark = self._bypasses
        self._waiters[waiter] = None
        same = self._waiters_by_key.get(waiter.key)
        if same is None:
            same = self._waiters_by_key[waiter.key] = OrderedDict()
        same[waiter] = None

    def _dequeue(self, waiter: _Waiter) -> None:
        del self._waiters[waiter]
        same = self._waiters_by_key[waiter.key]
        del same[waiter]
        if not same:
            del self._waiters_by_key[waiter.key]
        if waiter is self._watcher:  # served or gone: another keeps the time
            self._watcher = None
            self._watch()

    def _pop_oldest(self) -> _Waiter:
        waiter = next(iter(self._waiters))
        self._dequeue(waiter)
        return waiter

    def _forget(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._dequeue(waiter)
            return
        pinned = waiter.pinned
        if pinned is not None and pinned.pin_waiters and waiter in pinned.pin_waiters:
            pinned.pin_waiters.remove(waiter)

    async def _close_or_undo(
        self, to_close: list[ConnectionLike], conn: PooledConnection | None, waiter: _Waiter | None
    ) -> None:
        try:
            await close_all(to_close)
        except BaseException:  # asyncio's task.cancel() pierces anyio's shield
            if conn is not None:
                await self._give_back(conn)
            elif waiter is not None:  # pragma: no branch - acquire() passes one of the two
                with self._lock:
                    handed = waiter.woken and waiter.conn is not None
                    if not handed:
                        self._forget(waiter)
                if handed:
                    # Handed a connection (or a slot) while the close ran: give it back.
                    assert waiter.conn is not None
                    await self._give_back(waiter.conn)
            raise

    async def _give_back(self, conn: PooledConnection) -> None:
        if conn.connection is None:  # a slot for a connection not opened yet
            with self._lock:
                self._drop(conn, [])
                self._grant_slots()
            return
        await self.release(conn)

    # Check-in.

    async def release(self, conn: PooledConnection) -> None:
        """Give back a connection whose response is closed (or whose request failed)."""
        to_close = self.release_nowait(conn)
        if to_close:
            await close_all(to_close)

    def release_nowait(self, conn: PooledConnection) -> list[ConnectionLike]:
        """The decision half of :meth:`release`: returns connections the caller must close."""
        with self._lock:
            to_close: list[ConnectionLike] = []
            if conn.state is ConnectionState.CLOSED:  # the pool was closed under us
                return to_close
            inner = conn.connection
            if inner is None or not inner.is_idle() or self._closed:
                self._drop(conn, to_close)
                self._grant_slots()
                return to_close
            flow = conn.flow
            if flow is not None and flow.live:
                conn._move(ConnectionState.RESERVED)
                if conn.pin_waiters:
                    for waiter in conn.pin_waiters:
                        if waiter.flow is flow:
                            conn.pin_waiters.remove(waiter)
                            conn._move(ConnectionState.ACTIVE)
                            self._hand(waiter, conn)
                            return to_close
                flow._reserve(self, conn)
                return to_close
            self._free(conn, to_close)
            return to_close

    def _end_flow(self, flow: Flow) -> list[ConnectionLike]:
        """Free the reservations ``flow`` holds in this pool (its send() has ended)."""
        to_close: list[ConnectionLike] = []
        with self._lock:
            for pool_key in [pool_key for pool_key in flow._reserved if pool_key[0] is self]:
                for conn in flow._reserved.pop(pool_key):
                    self._free(conn, to_close)
        return to_close

    def _free(self, conn: PooledConnection, to_close: list[ConnectionLike]) -> None:
        """An ACTIVE or RESERVED connection is free for anyone: hand it on or park it."""
        # aclose() closes every reservation in the synchronous step that sets _closed, and
        # release_nowait() checks _closed before it calls us.
        if self._closed:  # pragma: no cover - unreachable, see above
            self._drop(conn, to_close)
            return
        if (
            conn.state is ConnectionState.RESERVED
            and (conn.pin_waiters or self._waiters)
            and conn.has_expired()
        ):
            # Closed by the server while it was reserved: do not hand it to a waiter. (Parked
            # idle, the next pick checks it, so the check is skipped when nobody waits.)
            self._drop(conn, to_close)
            self._grant_slots()
            return
        conn._move(ConnectionState.IDLE)
        conn.flow = None
        if conn.pin_waiters:
            waiter = conn.pin_waiters.popleft()
            conn._move(ConnectionState.ACTIVE)
            self._hand(waiter, conn)
            return
        if self._waiters:
            # The oldest waiter that can use the connection gets it. When the oldest of all
            # wants another origin or partition (identity), handing it this connection would
            # mean closing it and opening one for that key: with two identities through one
            # pool, strict FIFO did that on nearly every hand-off (419 connections for 1,000
            # requests). So a younger waiter of the same key may go first, but only while the
            # oldest has seen fewer than MAX_BYPASSES such hand-offs since it joined the
            # queue. It is the longest waiting, so no waiter is passed over more often:
            # each waits at most MAX_BYPASSES hand-offs more than strict FIFO would make it.
            oldest = next(iter(self._waiters))
            if oldest.key == conn.key:
                self._dequeue(oldest)
                conn._move(ConnectionState.ACTIVE)
                self._hand(oldest, conn)
                return
            same = self._waiters_by_key.get(conn.key)
            if same and self._bypasses - oldest.mark < MAX_BYPASSES:
                self._bypasses += 1
                waiter = next(iter(same))
                self._dequeue(waiter)
                conn._move(ConnectionState.ACTIVE)
                self._hand(waiter, conn)
                return
            if (
                not same
                and self._bypasses - oldest.mark < MAX_BYPASSES
                and oldest.key in self._open_by_key
            ):
                # Nobody of its key waits now, but the oldest's key has connections of its
                # own that will come back to it. Closing this one to open one for the oldest
                # only trades one identity's connection for another's, and the next request
                # of this key (often the very caller that freed it: a thread issues its next
                # request right away) would close one back: with 16 threads through 10
                # connections, two identities churned a connection on 1 in 6 requests. So
                # park it IDLE for its key, counted as one more pass over the oldest: after
                # MAX_BYPASSES, or when its key has no connection left, the oldest gets the
                # slot as below. Newcomers of other keys queue rather than evict it (_pick).
                # But the oldest's connections need not come back (its own caller may hold
                # them while it waits): unclaimed for PARK_BOUND, the slot is the oldest's
                # all the same (_watch, _unpark).
                self._bypasses += 1
                self._park(conn, to_close)
                self._watch()
                return
            # Nobody can use it, or the oldest has waited its share: it gets the slot.
            self._dequeue(oldest)
            self._drop(conn, to_close)
            self._hand(oldest, self._new(oldest.origin, oldest.key, oldest.flow))
            return
        self._park(conn, to_close)

    def _park(self, conn: PooledConnection, to_close: list[ConnectionLike]) -> None:
        """An IDLE connection goes on its key's stack (the keep-alive bound kept)."""
        conn.idle_since = self._clock()
        stack = self._idle.get(conn.key)
        if stack is None:
            stack = self._idle[conn.key] = OrderedDict()
        stack[conn] = None
        self._idle_by_age[conn] = None
        if self._max_keepalive is not None and len(self._idle_by_age) > self._max_keepalive:
            victim, _ = self._idle_by_age.popitem(last=False)
            self._remove_idle(victim)
            self._drop(victim, to_close)
            self._grant_slots()  # someone may wait while connections are parked

    def _hand(self, waiter: _Waiter, conn: PooledConnection) -> None:
        waiter.conn = conn
        conn.flow = waiter.flow
        waiter.wake()

    def _grant_slots(self) -> None:
        """Capacity was freed: let the oldest waiters open new connections."""
        while self._waiters and (
            self._max_connections is None or len(self._conns) < self._max_connections
        ):
            waiter = self._pop_oldest()
            self._hand(waiter, self._new(waiter.origin, waiter.key, waiter.flow))

    def _remove_idle(self, conn: PooledConnection) -> None:
        self._idle_by_age.pop(conn, None)
        stack = self._idle[conn.key]
        del stack[conn]
        if not stack:
            del self._idle[conn.key]

    def _drop(self, conn: PooledConnection, to_close: list[ConnectionLike]) -> None:
        """Move to CLOSED and forget it. The caller has removed it from idle/flow indexes."""
        conn._move(ConnectionState.CLOSED)
        del self._conns[conn.conn_id]
        left = self._open_by_key[conn.key] - 1
        if left:
            self._open_by_key[conn.key] = left
        else:
            del self._open_by_key[conn.key]
        if conn.connection is not None and not conn.connection.is_closed():
            to_close.append(conn.connection)
        if conn.pin_waiters:
            waiters, conn.pin_waiters = conn.pin_waiters, None
            for waiter in waiters:  # they fall back to a normal pick
                waiter.wake()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("closed conn_id %s", conn.conn_id)

    def _expire_oldest_idle(self, to_close: list[ConnectionLike]) -> None:
        # Amortised O(1) sweep: idle connections are ordered by age, so only the head can
        # have outlived the keep-alive expiry.
        if self._keepalive_expiry is None or not self._idle_by_age:
            return
        limit = self._clock() - self._keepalive_expiry
        while self._idle_by_age:
            oldest = next(iter(self._idle_by_age))
            if oldest.idle_since > limit:
                return
            self._remove_idle(oldest)
            self._drop(oldest, to_close)

    # Shutdown.

    async def aclose(self) -> None:
        """Close every connection and fail every waiter with :class:`PoolClosed`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            to_close: list[ConnectionLike] = []
            for conn in list(self._conns.values()):
                self._detach(conn)
                self._drop(conn, to_close)
            error = PoolClosed("The connection pool was closed while this request waited.")
            while self._waiters:
                waiter = self._pop_oldest()
                waiter.error = error
                waiter.wake()
            if self._deadlines is not None:
                self._deadlines.close()
        await close_all(to_close)

    async def __aenter__(self) -> ConnectionPool:
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self.aclose()
