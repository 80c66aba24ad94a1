"""The default bound on passing the oldest waiter over (``MAX_BYPASSES``, docs/pool.md).

The partition hand-off tests set a small bound; this one holds the shipped value: a request
for another identity waits behind at most 128 younger requests of the connection's own.
"""

from __future__ import annotations

import anyio
import pytest

from .test_pool import A, Harness
from .test_pool_partition_handoff import _Queue

pytestmark = pytest.mark.anyio


async def test_pool_oldest_waiter_is_passed_over_at_most_128_times() -> None:
    h = Harness(max_connections=1)
    conn = await h.acquire(A, partition="alice")
    queue = _Queue(h)
    async with anyio.create_task_group() as tg:
        await queue.add(tg, "bob", "bob")
        for i in range(130):
            await queue.add(tg, f"alice-{i}", "alice")
        served = []
        for _ in range(131):
            name, conn = await queue.free_next(conn)
            served.append(name)
        await h.pool.release(conn)
    assert served[:128] == [f"alice-{i}" for i in range(128)]
    assert served[128] == "bob"
    assert served[129:] == ["alice-128", "alice-129"]
    assert h.pool.waiting == 0
