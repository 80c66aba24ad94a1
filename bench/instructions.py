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
    .venv/bin/python bench/instructions.py --server ntlm      # NTLM, warm connection
    .venv/bin/python bench/instructions.py --server apache    # the same on Apache

``--server ntlm`` runs bench/ntlm.py's IIS-like server in ``per-connection`` mode (its own
process, outside valgrind), ``--server apache`` the real Apache + mod_auth_gssapi; the
default clients there are ``exclient-ntlm`` (ExClient + NTLMAuth), ``aiohttp-ntlm``
(aiohttp + aiohttp-ntlm) and plain ``exclient``. The NTLM clients log on once, on their
first request's connection, and every later request is one exchange on that authenticated
connection: the difference of two runs is the cost of a request on a warm connection, the
handshake cancelled out. Plain clients get the server's anonymous ``401`` (every path is
protected): one exchange on the same keep-alive connection, with a body of similar size, so
``exclient-ntlm`` minus ``exclient`` is what the auth adds per request.

Needs valgrind (Debian: ``apt-get install valgrind``). About a minute per client.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
import ntlm  # noqa: E402  (bench/ntlm.py: its user and server process)

# One client, sequential requests; run as
# `python -c CLIENT_SCRIPT name n url bench_dir expected_status user password`.
CLIENT_SCRIPT = """
import asyncio, sys
name, n, url, expect = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[5])
USER, PASSWORD = sys.argv[6], sys.argv[7]  # bench/ntlm.py's user
async def main():
    if name in ("aiohttp", "aiohttp-ntlm"):
        import aiohttp
        kwargs = {}
        if name == "aiohttp-ntlm":
            from aiohttp_ntlm import HttpNtlmAuthMiddleware
            kwargs["middlewares"] = (HttpNtlmAuthMiddleware(USER, PASSWORD),)
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(connector=connector, **kwargs) as s:
            for _ in range(n):
                async with s.get(url) as r:
                    assert r.status == expect, r.status
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
        kwargs = {}
        if name in ("exclient", "exclient-ntlm"):
            from httpx_extensions import ExClient as cls
            if name == "exclient-ntlm":
                from httpx_extensions import NTLMAuth
                kwargs["auth"] = NTLMAuth(USER, PASSWORD)
        elif name == "exclient-httpx2":
            from httpx_extensions.httpx2 import ExClient as cls
        else:
            cls = httpx.AsyncClient
        async with cls(limits=httpx.Limits(max_connections=100), **kwargs) as c:
            for _ in range(n):
                r = await c.get(url)
                assert r.status_code == expect, r.status_code
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
    "exclient-ntlm": "ExClient + NTLMAuth",
    "aiohttp-ntlm": "aiohttp + aiohttp-ntlm",
}
# bench/ntlm.py's user, whom its servers know.
NTLM_LOGON = (ntlm.USERNAME, ntlm.PASSWORD)
# Clients that log on: on an NTLM server they get 200s, the others its anonymous 401s.
NTLM_CLIENTS = {"exclient-ntlm", "aiohttp-ntlm"}
# --server -> (default clients, default path); "nginx" is bench/_common.py's.
SERVERS = {
    "nginx": ("exclient,aiohttp,raw", "/4k"),
    "ntlm": ("exclient,exclient-ntlm,aiohttp-ntlm", "/"),
    "apache": ("exclient,exclient-ntlm,aiohttp-ntlm", "/"),
}


def count(valgrind: str, name: str, n: int, url: str, expect: int, keep: Path | None = None) -> int:
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
                str(expect),
                *NTLM_LOGON,
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if keep is not None and proc.returncode == 0:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f"{tmp}/out", keep / f"callgrind.{name}.{n}")
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"{name}: valgrind run failed:\n{proc.stderr[-2000:]}")
    return int(found[1])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--server",
        choices=list(SERVERS),
        default="nginx",
        help="nginx (default); ntlm: the IIS-like NTLM server, per-connection; apache",
    )
    p.add_argument(
        "--clients",
        help="default: exclient,aiohttp,raw (nginx), "
        "exclient,exclient-ntlm,aiohttp-ntlm (ntlm, apache)",
    )
    p.add_argument(
        "--path", help="nginx: /4k (4,096-byte body, default) or / ('ok'); NTLM servers: /"
    )
    p.add_argument(
        "--callgrind-out",
        type=Path,
        help="keep each run's callgrind output in this folder (callgrind.<client>.<n>), "
        "for callgrind_annotate",
    )
    p.add_argument("--small", type=int, default=200)
    p.add_argument("--large", type=int, default=1200)
    args = p.parse_args(argv)
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("bench/instructions.py: valgrind not found (Debian: apt-get install valgrind)")
    default_clients, default_path = SERVERS[args.server]
    clients = [c for c in (args.clients or default_clients).split(",") if c]
    path = args.path or default_path
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        p.error(f"unknown clients {sorted(unknown)}; choose from {','.join(CLIENTS)}")
    if args.server == "nginx" and NTLM_CLIENTS & set(clients):
        p.error("the NTLM clients need --server ntlm or --server apache")
    per_request: dict[str, float] = {}
    with _server(args.server) as base_url:
        url = base_url + path
        for name in clients:
            # A plain client on an NTLM server: the anonymous 401, one exchange.
            expect = 401 if args.server != "nginx" and name not in NTLM_CLIENTS else 200
            small = count(valgrind, name, args.small, url, expect, args.callgrind_out)
            large = count(valgrind, name, args.large, url, expect, args.callgrind_out)
            per_request[name] = (large - small) / (args.large - args.small)
            print(f"{name}: {per_request[name]:,.0f} instructions/request", file=sys.stderr)
    where = {"nginx": "nginx", "ntlm": "IIS-like, per-connection", "apache": "Apache"}
    print(
        f"| client | instructions / request (GET {path}, {where[args.server]}, sequential) "
        "| vs aiohttp |"
    )
    print("|---|---:|---:|")
    for name, ir in per_request.items():
        # NTLM clients against aiohttp + aiohttp-ntlm, the others against plain aiohttp.
        peer = "aiohttp-ntlm" if name in NTLM_CLIENTS else "aiohttp"
        ratio = _common.fmt_ratio(ir, per_request.get(peer))
        print(f"| {CLIENTS[name]} | {ir:,.0f} | {ratio} |")
    return 0


@contextlib.contextmanager
def _server(kind: str) -> Iterator[str]:
    """The base URL of a server running outside valgrind for the length of the block."""
    if kind == "nginx":
        with _common.Nginx() as nginx:
            yield nginx.base_url
        return
    with ntlm.ServerProcess("apache" if kind == "apache" else "per-connection") as server:
        yield server.info["url"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
