"""The problem and the fix, side by side, on a local connection-bound server.

Starts the loopback test server whose ``/auth`` endpoint authenticates the TCP connection the
way IIS does for NTLM (the nonce of leg 1 is valid only on the connection that issued it), then
sends the same concurrent authenticated workload through stock ``httpx.AsyncClient`` and through
``ExClient``, both with a 4-connection pool, and prints what each achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from httpx_extensions import ExClient  # noqa: E402
from tests.authflows import NonceAuth  # noqa: E402
from tests.servers import LoopbackServer  # noqa: E402


async def workload(
    client: httpx.AsyncClient, url: str, requests: int, concurrency: int
) -> tuple[int, int, float]:
    auth = NonceAuth("demo-user", copy_conn_id=isinstance(client, ExClient))
    ok = failed = 0
    queue = iter(range(requests))

    async def worker() -> None:
        nonlocal ok, failed
        for _ in queue:
            try:
                response = await client.get(url, auth=auth)
            except httpx.HTTPError:
                failed += 1
                continue
            if response.status_code == 200:
                ok += 1
            else:
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, failed, time.perf_counter() - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-connections", type=int, default=4)
    args = parser.parse_args()

    limits = httpx.Limits(max_connections=args.max_connections)
    rows = []
    with LoopbackServer() as server:
        for name, factory in (("httpx.AsyncClient", httpx.AsyncClient), ("ExClient", ExClient)):
            server.reset()
            async with factory(limits=limits, timeout=60) as client:
                ok, failed, elapsed = await workload(
                    client, server.url + "/auth", args.requests, args.concurrency
                )
            rows.append((name, ok, failed, server.connections_opened, server.requests_total, elapsed))

    print(
        f"\n{args.requests} authenticated GETs, concurrency {args.concurrency}, "
        f"max_connections={args.max_connections}, connection-bound server\n"
    )
    header = f"{'client':<18} {'ok':>6} {'failed':>7} {'connections':>12} {'exchanges/req':>14} {'req/s':>8}"
    print(header)
    print("-" * len(header))
    for name, ok, failed, conns, exchanges, elapsed in rows:
        print(
            f"{name:<18} {ok:>6} {failed:>7} {conns:>12} "
            f"{exchanges / args.requests:>14.2f} {args.requests / elapsed:>8.0f}"
        )
    stock, ours = rows
    if stock[1]:
        print(f"\nExClient: {ours[1] / stock[1]:.1f}x the successful requests of httpx.AsyncClient")
    return 0 if ours[2] == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
