#!/usr/bin/env python3
"""Client CPU per request as instructions, counted by valgrind: repeatable on a busy machine.

Wall-clock rates on a shared 2-core machine move by 10-50% with whatever else runs; the
number of instructions a client executes per request does not. This runs each client twice
under ``valgrind --tool=callgrind`` (the client process only; nginx runs outside it), with
``--small`` and ``--large`` sequential ``GET`` requests, and reports
``(instructions(large) - instructions(small)) / (large - small)``: the cost of one more
request, start-up and imports cancelled out. Lower is better; the ratio to aiohttp is what
issue-style targets ("1.2x aiohttp") translate to, as long as both wait on the same server.

    .venv/bin/python bench/instructions.py                     # exclient, aiohttp, raw; /4k
    .venv/bin/python bench/instructions.py --clients exclient --path /
    .venv/bin/python bench/instructions.py --clients exclient,exclient-httpx2  # both flavours

Needs valgrind (Debian: ``apt-get install valgrind``). About a minute per client.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

# One client, sequential requests; run as `python -c CLIENT_SCRIPT name n url`.
CLIENT_SCRIPT = """
import asyncio, sys
name, n, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
async def main():
    if name == "aiohttp":
        import aiohttp
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as s:
            for _ in range(n):
                async with s.get(url) as r:
                    assert r.status == 200
                    await r.read()
    elif name == "raw":
        sys.path.insert(0, sys.argv[4])
        from plain import _RawClient
        client = _RawClient(100)
        for _ in range(n):
            await client.get(url)
        await client.aclose()
    else:
        if name in ("httpx2", "exclient-httpx2"):
            import httpx2 as httpx  # the same API under another name
        else:
            import httpx
        if name == "exclient":
            from httpx_extensions import ExClient as cls
        elif name == "exclient-httpx2":
            from httpx_extensions.httpx2 import ExClient as cls
        else:
            cls = httpx.AsyncClient
        async with cls(limits=httpx.Limits(max_connections=100)) as c:
            for _ in range(n):
                r = await c.get(url)
                assert r.status_code == 200
                r.content
asyncio.run(main())
"""
CLIENTS = {
    "exclient": "ExClient",
    "aiohttp": "aiohttp.ClientSession",
    "httpx": "httpx.AsyncClient",
    "exclient-httpx2": "ExClient on httpx2",
    "httpx2": "httpx2.AsyncClient",
    "raw": "raw asyncio",
}


def count(valgrind: str, name: str, n: int, url: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                "-c",
                CLIENT_SCRIPT,
                name,
                str(n),
                url,
                str(HERE),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"{name}: valgrind run failed:\n{proc.stderr[-2000:]}")
    return int(found[1])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", default="exclient,aiohttp,raw")
    p.add_argument("--path", default="/4k", help="/4k (4,096-byte body, default) or / ('ok')")
    p.add_argument("--small", type=int, default=200)
    p.add_argument("--large", type=int, default=1200)
    args = p.parse_args(argv)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("bench/instructions.py: valgrind not found (Debian: apt-get install valgrind)")
    clients = [c for c in args.clients.split(",") if c]
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        p.error(f"unknown clients {sorted(unknown)}; choose from {','.join(CLIENTS)}")
    per_request: dict[str, float] = {}
    with _common.Nginx() as server:
        url = server.base_url + args.path
        for name in clients:
            small = count(valgrind, name, args.small, url)
            large = count(valgrind, name, args.large, url)
            per_request[name] = (large - small) / (args.large - args.small)
            print(f"{name}: {per_request[name]:,.0f} instructions/request", file=sys.stderr)
    print(f"| client | instructions / request (GET {args.path}, sequential) | vs aiohttp |")
    print("|---|---:|---:|")
    for name, ir in per_request.items():
        ratio = _common.fmt_ratio(ir, per_request.get("aiohttp"))
        print(f"| {CLIENTS[name]} | {ir:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
