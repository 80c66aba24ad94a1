"""Pins the pool cannot honour (a conn_id that is closed or unknown, or one of another origin)
and what the pool reports of itself: each request still gets a connection of its own origin,
and the pool's repr counts its connections by state."""

from __future__ import annotations

import logging

import pytest

from .test_pool import A, B, Harness

pytestmark = pytest.mark.anyio


async def test_pool_pin_to_a_closed_or_unknown_conn_id_sends_on_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    first = await h.acquire()
    h.opened[0].idle = False  # not reusable: the release closes it
    await h.pool.release(first)
    assert h.pool.connections == []
    with caplog.at_level(logging.WARNING, logger="httpx_extensions"):
        again = await h.acquire(pin=first.conn_id)
        unknown = await h.acquire(pin=10_000)
    assert len({first.conn_id, again.conn_id, unknown.conn_id}) == 3
    assert [c.origin for c in h.opened] == [A, A, A]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"conn_id {first.conn_id} is not open in this pool (closed or unknown); "
        "sending on another connection",
        "conn_id 10000 is not open in this pool (closed or unknown); sending on another connection",
    ]


async def test_pool_pin_to_another_origin_is_ignored_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # httpx copies request extensions onto a cross-origin redirect: the pin must not follow.
    h = Harness()
    on_a = await h.acquire(A)
    await h.pool.release(on_a)
    with caplog.at_level(logging.DEBUG, logger="httpx_extensions"):
        on_b = await h.acquire(B, pin=on_a.conn_id)
    assert on_b.conn_id != on_a.conn_id
    assert on_b.origin == B
    assert [c.origin for c in h.opened] == [A, B]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "not this request's origin; ignoring the pin" in caplog.text
    # The idle connection to A is still there for A.
    assert (await h.acquire(A)).conn_id == on_a.conn_id


async def test_pool_repr_counts_connections_by_state() -> None:
    h = Harness()
    busy = await h.acquire(A)
    free = await h.acquire(B)
    await h.pool.release(free)
    assert repr(h.pool) == "<ConnectionPool [1 active, 1 idle, 0 waiting]>"
    await h.pool.release(busy)
    assert repr(h.pool) == "<ConnectionPool [2 idle, 0 waiting]>"
