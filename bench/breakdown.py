#!/usr/bin/env python3
"""Where a client's time goes: a Python-level profile of sequential ``GET`` requests, grouped
by the package (or, for httpx-extensions, the module) whose code ran.

Each client runs in a fresh interpreter against the private nginx of ``bench/plain.py``:
200 warm-up requests, then ``--requests`` (default 3,000) sequential ``GET /4k`` under
``cProfile`` with the process CPU clock as its timer. Reported per request: the profiled
CPU time of each group (``tottime``: time in the group's own code, not in what it calls)
and its function calls. Calls are the same in every run of the same code; the times are
inflated by the profiler (about 1.7x) and move with the machine, so compare shares and
calls, or two runs side by side. C functions (socket and buffer methods, ``bytes.find``,
``dict.get``...) are one group, whichever package called them. ``bench/instructions.py``
gives the uninflated whole: instructions per request.

``--source DIR`` profiles the httpx-extensions package of another checkout (``DIR/src``
put first on ``sys.path``) with this venv's dependencies: the same run for two versions,
e.g. before and after a change (``git worktree add --detach /tmp/old <commit>``).

    .venv/bin/python bench/breakdown.py                         # exclient and aiohttp
    .venv/bin/python bench/breakdown.py --clients exclient --source /tmp/old --label before
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

CLIENTS = ("exclient", "aiohttp")
WARMUP = 200
# Matched in this order against a code object's file; the first that occurs names its group.
PACKAGES = ("httpx", "httpcore", "anyio", "sniffio", "h11", "aiohttp", "multidict", "yarl")
STDLIB = ("asyncio", "ssl", "socket", "selectors", "typing", "enum", "email", "http")


def group(path: str) -> str:
    """The group of a profiled function, from its code's file name (``~`` for C code)."""
    if path == "~" or path.startswith("<built-in"):
        return "C functions"
    parts = Path(path).parts
    if "httpx_extensions" in parts:
        rest = parts[parts.index("httpx_extensions") + 1 :]
        return "httpx_extensions." + rest[0].removesuffix(".py")
    for name in PACKAGES:
        if name in parts:
            return name
    for name in STDLIB:
        if name in parts or Path(path).stem == name:
            return f"stdlib {name}"
    return "other Python"


async def _profile(client: str, url: str, n: int) -> dict:
    if client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession()

        async def get() -> bytes:
            async with session.get(url) as resp:
                return await resp.read()

        close = session.close
    else:
        from httpx_extensions import ExClient

        ex = ExClient()

        async def get() -> bytes:
            return (await ex.get(url)).content

        close = ex.aclose
    for _ in range(WARMUP):
        await get()
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    for _ in range(n):
        await get()
    prof.disable()
    await close()
    times: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    for (path, _line, _func), (_cc, ncalls, tottime, _ct, _callers) in stats.items():
        times[group(path)] += tottime
        calls[group(path)] += ncalls
    return {
        "us_per_request": {k: 1e6 * v / n for k, v in times.items()},
        "calls_per_request": {k: v / n for k, v in calls.items()},
    }


def worker_main(spec: dict) -> None:
    try:
        result = asyncio.run(_profile(spec["client"], spec["url"], spec["requests"]))
    except ImportError as exc:
        result = _common.import_error(exc)
    import httpx_extensions

    result["package"] = str(Path(httpx_extensions.__file__).parent)
    _common.emit(result)


def render(label: str, result: dict) -> str:
    times, calls = result["us_per_request"], result["calls_per_request"]
    total_t, total_c = sum(times.values()), sum(calls.values())
    lines = [
        f"{label}: {total_t:,.0f} us profiled CPU and {total_c:,.0f} calls per request",
        "",
        "| group | us / request | share | calls / request |",
        "|---|---:|---:|---:|",
    ]
    for name in sorted(times, key=lambda k: -times[k]):
        lines.append(
            f"| {name} | {times[name]:,.1f} | {100 * times[name] / total_t:.0f}% "
            f"| {calls[name]:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        worker_main(json.loads(argv[1]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--clients", default=",".join(CLIENTS), help="comma-separated: " + ", ".join(CLIENTS)
    )
    p.add_argument("--requests", type=int, default=3000, help="profiled requests (3000)")
    p.add_argument("--path", default="/4k", help="the path requested (/4k: a 4 KiB body)")
    p.add_argument("--source", type=Path, help="a checkout whose src/ is profiled instead")
    p.add_argument("--label", default="", help="a word before each table, e.g. 'before'")
    args = p.parse_args(argv)
    clients = [c for c in args.clients.split(",") if c]
    unknown = sorted(set(clients) - set(CLIENTS))
    if unknown:
        p.error(f"unknown client(s) {', '.join(unknown)}: choose from {', '.join(CLIENTS)}")
    env = dict(os.environ)
    if args.source is not None:
        src = args.source.resolve() / "src"
        if not (src / "httpx_extensions" / "__init__.py").is_file():
            p.error(f"--source {args.source}: no src/httpx_extensions/ there")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(src), env.get("PYTHONPATH"))))
    server = _common.Nginx()
    with server:
        for client in clients:
            spec = {"client": client, "url": server.base_url + args.path, "requests": args.requests}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode or not lines:
                print(f"{client}: the profile failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            result = json.loads(lines[-1])
            label = " ".join(filter(None, (args.label, client)))
            print(render(label, result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
