"""The problem and the fix, side by side, on a local NTLM server.

Starts the IIS-like test server (one pyspnego NTLM acceptor per TCP connection, as IIS
authenticates connections), then sends the same concurrent NTLM-authenticated workload through
stock ``httpx.AsyncClient`` and through ``ExClient``, both with the library's ``NTLMAuth`` and
the same pool size, and prints what each achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import IISLikeServer, write_user_file

from httpx_extensions import (
    ExClient,
    NTLMAuth,
)


async def workload(
    client: httpx.AsyncClient, url: str, requests: int, concurrency: int
) -> tuple[int, int, float]:
    auth = NTLMAuth("EXAMPLE\\demo", "Demo-Passw0rd")
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
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-connections", type=int, default=10)
    args = parser.parse_args()

    limits = httpx.Limits(max_connections=args.max_connections)
    rows = []
    users = Path(tempfile.mkdtemp()) / "users.txt"
    write_user_file(users, [("EXAMPLE", "demo", "Demo-Passw0rd")], store_hashes=True)
    with IISLikeServer(user_file=users) as server:
        for name, factory in (("httpx.AsyncClient", httpx.AsyncClient), ("ExClient", ExClient)):
            server.reset()
            async with factory(limits=limits, timeout=60) as client:
                ok, failed, elapsed = await workload(
                    client, server.url + "/data", args.requests, args.concurrency
                )
            rows.append(
                (name, ok, failed, server.connections_opened, server.requests_total, elapsed)
            )

    print(
        f"\n{args.requests} authenticated GETs, concurrency {args.concurrency}, "
        f"max_connections={args.max_connections}, NTLM (IIS-like server on loopback)\n"
    )
    header = (
        f"{'client':<18} {'ok':>6} {'failed':>7} {'connections':>12} "
        f"{'exchanges/req':>14} {'ok req/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, ok, failed, conns, exchanges, elapsed in rows:
        print(
            f"{name:<18} {ok:>6} {failed:>7} {conns:>12} "
            f"{exchanges / args.requests:>14.2f} {ok / elapsed:>9.0f}"
        )
    stock, ours = rows
    if stock[1]:
        ratio = (ours[1] / ours[5]) / (stock[1] / stock[5])
        print(f"\nExClient: {ratio:.1f}x the successful requests per second of httpx.AsyncClient")
    return 0 if ours[2] == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
