#!/usr/bin/env python3
"""Memory and scale: what an idle connection and a queued request cost, and 10,000 queued.

Against the private nginx of ``bench/plain.py`` (``GET /`` -> ``200 ok``), for ExClient and
aiohttp, each measurement in a fresh interpreter:

* **bytes per idle connection**: Python heap (``tracemalloc``) after N keep-alive
  connections were opened and went idle, minus the heap before, over N (default 500); the
  client is made, and a first client has sent a request (imports done), before "before";
* **bytes per queued request**: the heap's peak while 10,000 requests are in flight through
  a 100-connection pool (so about 9,900 of them queue), minus the heap before, over 10,000.
  Both clients pay the same for the 10,000 tasks driving them; the difference is the client;
* **queued throughput**: successful req/s with 10,000 concurrent requests through 100
  connections, as a % of the same client's rate at 100 concurrent (the target: >= 90%, a
  queue that stays O(1) per request). Measured without tracemalloc.

    .venv/bin/python bench/scale.py              # full run, updates bench/README.md + results
    .venv/bin/python bench/scale.py --no-readme  # print only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

CLIENTS = {"exclient": "ExClient", "aiohttp": "aiohttp.ClientSession"}
QUEUED, POOL = 10_000, 100


def _client(name: str, limit: int):
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))

        async def get(url: str) -> bool:
            async with session.get(url) as resp:
                return resp.status == 200 and await resp.read() == b"ok"

        return session.close, get
    import httpx

    from httpx_extensions import ExClient

    client = ExClient(limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit))

    async def get(url: str) -> bool:
        resp = await client.get(url)
        return resp.status_code == 200 and resp.content == b"ok"

    return client.aclose, get


async def _gather(get, url: str, n: int) -> int:
    results = await asyncio.gather(*(get(url) for _ in range(n)), return_exceptions=True)
    return sum(r is True for r in results)


async def _worker(spec: dict) -> dict:
    url, name, what = spec["base_url"] + "/", spec["client"], spec["what"]
    if what == "idle":
        n = spec["connections"]
        # A first client sends one request (every module the client needs is imported then),
        # and the measured one is made before the heap is read: what is left is what the
        # connections cost, not imports.
        close, get = _client(name, 1)
        await get(url)
        await close()
        close, get = _client(name, n)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        ok = await _gather(get, url, n)  # n at once: n connections, then all idle
        after = tracemalloc.get_traced_memory()[0]
        await close()
        return {"ok": ok, "bytes_per_connection": (after - before) / n}
    if what == "queued-memory":
        close, get = _client(name, POOL)
        await _gather(get, url, POOL)  # connections open and warm: not counted
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        ok = await _gather(get, url, QUEUED)
        peak = tracemalloc.get_traced_memory()[1]
        await close()
        return {"ok": ok, "bytes_per_queued_request": (peak - before) / QUEUED}
    # "rate": c concurrent through POOL connections
    c = spec["concurrency"]
    close, get = _client(name, POOL)
    await _gather(get, url, POOL)
    started = time.perf_counter()
    ok = 0
    for _ in range(spec["rounds"]):
        ok += await _gather(get, url, c)
    wall = time.perf_counter() - started
    await close()
    return {"ok": ok, "sent": c * spec["rounds"], "req_per_s": ok / wall}


def worker_main(spec: dict) -> None:
    try:
        result = asyncio.run(_worker(spec))
    except ImportError as exc:
        result = _common.import_error(exc)
    _common.emit(result)


def render(data: dict) -> str:
    r = data["results"]
    lines = [
        _common.facts_line(data, servers=f"nginx {data['server']['nginx']}"),
        "",
        f"Idle: {data['config']['connections']} keep-alive connections opened at once, then "
        "idle (the client made and its modules imported before the heap is read). "
        f"Queued: {QUEUED:,} requests at once through a {POOL}-connection pool. Bytes "
        "are Python heap (tracemalloc), the same 10,000 driving tasks for both clients. "
        f"Rates: best of {data['config']['repeat']}, c = concurrent requests through {POOL} "
        "connections.",
        "",
        "| client | bytes / idle connection | bytes / queued request | req/s at c=100 "
        f"| req/s at c={QUEUED:,} | c={QUEUED:,} as % of c=100 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in data["config"]["clients"]:
        x = r[name]
        hi, lo = x.get("rate_queued"), x.get("rate_100")
        pct = f"{100 * hi / lo:.0f}%" if hi and lo else "n/a"
        label = f"**{CLIENTS[name]}**" if name == "exclient" else CLIENTS[name]
        lines.append(
            f"| {label} | {_common.fmt_int(x.get('bytes_per_connection'))} "
            f"| {_common.fmt_int(x.get('bytes_per_queued_request'))} "
            f"| {_common.fmt_int(lo)} | {_common.fmt_int(hi)} | {pct} |"
        )
    if "exclient" in r and "aiohttp" in r:
        ex, ai = r["exclient"], r["aiohttp"]
        lines += [
            "",
            "- ExClient / aiohttp memory: idle connection "
            + _common.fmt_ratio(ex.get("bytes_per_connection"), ai.get("bytes_per_connection"))
            + ", queued request "
            + _common.fmt_ratio(
                ex.get("bytes_per_queued_request"), ai.get("bytes_per_queued_request")
            )
            + " (lower is leaner)",
        ]
    return "\n".join(lines)


INTRO = """\
## Memory and scale (`bench/scale.py`)

What an idle keep-alive connection and a queued request cost on the Python heap, and whether
10,000 requests queued behind 100 connections keep the rate of 100 (the pool is O(1) per
request: nothing scans the queue). `.venv/bin/python bench/scale.py` reruns it.
"""


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        worker_main(json.loads(argv[1]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--connections", type=int, default=500, help="idle connections (500)")
    p.add_argument("--repeat", type=int, default=3, help="rate runs per cell, best kept (3)")
    p.add_argument(
        "--no-readme",
        action="store_true",
        help="do not rewrite bench/README.md nor bench/results/scale.json (the results go to "
        "bench/results/scale.raw.json, which git ignores)",
    )
    p.add_argument("--check-args", action="store_true", help="check the options and exit")
    args = p.parse_args(argv)
    if args.check_args:
        return 0
    clients = [c for c in args.clients.split(",") if c]
    server = _common.Nginx()
    cfg = {"clients": clients, "connections": args.connections, "repeat": args.repeat}
    data = _common.new_results("scale", cfg, {"nginx": server.version}, ())
    results: dict[str, dict] = {name: {} for name in clients}
    script = Path(__file__).resolve()
    with server:
        for name in clients:
            base = {"client": name, "base_url": server.base_url}
            idle = _common.run_worker(
                script, {**base, "what": "idle", "connections": args.connections}, 120
            )
            queued = _common.run_worker(script, {**base, "what": "queued-memory"}, 300)
            results[name].update(idle)
            results[name].update(queued)
            for key, c, rounds in (("rate_100", POOL, 50), ("rate_queued", QUEUED, 1)):
                runs = [
                    _common.run_worker(
                        script, {**base, "what": "rate", "concurrency": c, "rounds": rounds}, 300
                    )
                    for _ in range(args.repeat)
                ]
                good = [r["req_per_s"] for r in runs if "req_per_s" in r and r["ok"] == r["sent"]]
                results[name][key] = max(good) if good else None
                results[name][key + "_runs"] = runs
            print(f"{name}: {json.dumps(results[name], default=str)[:300]}", file=sys.stderr)
    data["results"] = results
    out = _common.RESULTS / ("scale.raw.json" if args.no_readme else "scale.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    text = render(data)
    if not args.no_readme:
        _common.replace_section(_common.README, "scale", f"{INTRO}\n{text}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
