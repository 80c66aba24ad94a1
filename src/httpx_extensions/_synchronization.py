"""The concurrency primitives of the I/O layers, in pairs: one async, one sync.

The pool, the HTTP/1.1 connection, the transport and the client are written once, async
(``_pool.py``, ``_http11.py``, ``_transport.py``, ``_client.py``); their sync twins under
``_sync/`` are generated from them by ``scripts/generate``, which renames ``AsyncX`` to
``SyncX`` and ``async_x`` to ``sync_x``. Everything that differs between the two lives here, so
the generator only renames (httpcore's ``_synchronization.py`` is the model).

=====================  ==========================================  ===============================
primitive              async                                       sync
=====================  ==========================================  ===============================
``*Lock``              no-op: on one event loop a decision that    ``threading.Lock``: the pool's
                       does no I/O is atomic already               decisions, one thread at a time
``*WakeUp``            a future (asyncio; its timeout kept by the  a ``threading.Event`` per
                       loop's shared ``Deadlines``), an anyio      waiter: exactly one woken per
                       Event elsewhere (trio); re-armable: a       freed connection; re-armable:
                       nudge ends a wait, a new future or Event    a nudge sets it, rearm clears
                       waits again                                 it
``*_shield()``         anyio's shielded cancel scope               nothing to shield from
``*_checkpoint()``     let the loop run (anyio checkpoint)         nothing to do
``*_run_blocking()``   in a worker thread (anyio.to_thread)        inline: we are a thread
``*Backends``          asyncio-native streams on asyncio,          ``httpcore.SyncBackend``
                       ``httpcore.AnyIOBackend`` elsewhere         (sockets, TLS, timeouts)
=====================  ==========================================  ===============================
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpcore
import sniffio

from ._network import AsyncioBackend, Deadlines

__all__ = [
    "AsyncBackends",
    "AsyncLock",
    "AsyncWakeUp",
    "SyncBackends",
    "SyncLock",
    "SyncWakeUp",
    "async_checkpoint",
    "async_run_blocking",
    "async_shield",
    "sync_checkpoint",
    "sync_run_blocking",
    "sync_shield",
]

T = TypeVar("T")


# Locks around the pool's decisions.


class AsyncLock:
    """A lock that is not needed: one event loop runs one decision at a time, and the pool's
    decisions never await. Kept so the sync twin of the code is a rename away."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


#: The sync pool's decisions run under one ``threading.Lock``.
SyncLock = threading.Lock


# One waiter's wake-up.


class AsyncWakeUp:
    """The wake-up of one waiter: :meth:`wake` once, :meth:`wait` until it is.

    On asyncio it waits on a bare future, its timeout kept by the loop's shared
    :class:`Deadlines`: with a thousand queued requests, an anyio Event plus cancel scope per
    waiter was a measurable share of the time, and a timer per waiter still was. Elsewhere
    (trio) it uses anyio's primitives.
    """

    __slots__ = ("_event", "_future")

    def __init__(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._future: asyncio.Future[None] | None = None
        self._event: anyio.Event | None = None
        if loop is not None:
            self._future = loop.create_future()
        else:
            self._event = anyio.Event()

    def wake(self) -> None:
        self._set()

    def nudge(self) -> None:
        """End the current (or next) :meth:`wait` early, without waking for good: the waiter
        looks again at what it waits for, calls :meth:`rearm` and waits again."""
        self._set()  # not wake(): a subclass's wake() means "for good"

    def _set(self) -> None:
        if self._future is not None:
            if not self._future.done():
                self._future.set_result(None)
        else:
            assert self._event is not None
            self._event.set()

    def rearm(self) -> None:
        """Undo a :meth:`nudge` or a timeout so that the next :meth:`wait` waits. Call it
        where :meth:`wake` cannot run meanwhile (the pool's lock), after checking it has not."""
        # Nudged, or past its deadline: spent either way, so a fresh one. (Nothing can have
        # woken it: the caller checked under the lock that every wake() is called under.)
        future = self._future
        if future is not None:
            self._future = future.get_loop().create_future()
        else:
            self._event = anyio.Event()

    async def wait(
        self,
        deadline: float | None,
        keeper: Callable[[asyncio.AbstractEventLoop], Deadlines],
        clock: Callable[[], float],
    ) -> None:
        """Wait until woken; raises TimeoutError at ``deadline`` (a ``clock()`` reading).

        ``keeper`` gives the :class:`Deadlines` that keeps the timeout on an asyncio loop.
        """
        future = self._future
        if future is not None:
            if deadline is None:
                await future
                return
            loop = future.get_loop()
            at = loop.time() + max(deadline - clock(), 0)
            deadlines = keeper(loop)
            deadlines.add(future, at, TimeoutError)
            try:
                await future
            finally:
                deadlines.discard(future)
            return
        assert self._event is not None
        if deadline is None:
            await self._event.wait()
        else:
            with anyio.fail_after(max(deadline - clock(), 0)):
                await self._event.wait()


class SyncWakeUp:
    """The wake-up of one waiting thread: its own ``threading.Event``, so a freed connection
    wakes exactly the one thread it is handed to (a shared Condition would wake them all)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def nudge(self) -> None:
        """End the current (or next) :meth:`wait` early (see the async twin)."""
        self._event.set()

    def rearm(self) -> None:
        """Undo a :meth:`nudge` or a timeout; under the lock that every :meth:`wake` is
        called under, after checking it has not."""
        self._event.clear()

    def wait(
        self,
        deadline: float | None,
        keeper: object,
        clock: Callable[[], float],
    ) -> None:
        """Wait until woken; raises TimeoutError at ``deadline`` (a ``clock()`` reading).

        ``keeper`` is the async twin's timer keeper, unused here (the Event keeps the time).
        """
        timeout = None if deadline is None else max(deadline - clock(), 0)
        if not self._event.wait(timeout):
            raise TimeoutError


# Cancellation and scheduling.


def async_shield() -> anyio.CancelScope:
    """A scope that anyio cancellation does not reach (closes run to the end)."""
    return anyio.CancelScope(shield=True)


def sync_shield() -> contextlib.nullcontext[None]:
    """Threads are not cancelled: nothing to shield from."""
    return contextlib.nullcontext()


async_checkpoint = anyio.lowlevel.checkpoint


def sync_checkpoint() -> None:
    """Nothing to yield to: the other threads run whenever the GIL lets them."""


async def async_run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (a Kerberos ccache read, SSPI) in a worker thread."""
    return await anyio.to_thread.run_sync(func, *args)


def sync_run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run a blocking call inline: the caller is a thread already."""
    return func(*args)


# Network backends.


class AsyncBackends:
    """The network backend for the running event loop: the asyncio-native one on asyncio,
    httpcore's anyio backend elsewhere (trio)."""

    __slots__ = ("_anyio", "_asyncio")

    def __init__(self) -> None:
        self._asyncio = AsyncioBackend()
        self._anyio = httpcore.AnyIOBackend()

    def current(self) -> httpcore.AsyncNetworkBackend:
        if sniffio.current_async_library() == "asyncio":
            return self._asyncio
        return self._anyio


class SyncBackends:
    """httpcore's own sync backend: blocking sockets, TLS and timeouts."""

    __slots__ = ("_backend",)

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def current(self) -> httpcore.NetworkBackend:
        return self._backend
