"""Proxy NTLM benchmark: GETs through an NTLM-authenticating proxy on loopback.

Clients, side by side in one run:

* ``ExClient``       ExClient(proxy=..., proxy_auth=NTLMAuth(...)), ``http://`` targets
                     (forward proxying) and ``https://`` targets (CONNECT tunnels);
* ``requests-ntlm``  one requests.Session(auth=HttpNtlmAuth(...)) shared by threads,
                     ``http://`` targets only: it answers a 407 for forward proxying, not
                     for CONNECT (its hook never sees the 407 that CONNECT gets).

The proxy is ``httpx_extensions.testing.AuthProxy`` (a real pyspnego acceptor per client
connection, NTLM only) in front of the test suite's loopback origin, both in a child process
so they do not share the client's interpreter. "exchanges/req" is what the proxy saw (every
request, 407 legs included; a request inside a tunnel counts as one) per successful request.

Run from the repository root::

    .venv/bin/python bench/proxy.py                  # 2,000 GETs per client, c = 50
    .venv/bin/python bench/proxy.py --requests 500   # quicker

Needs ``requests-ntlm`` for its row (bench/requirements.txt); the row is skipped without it.
Prints a Markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
USER = ("EXAMPLE", "bench", "Bench-Passw0rd")


def serve() -> int:
    """Child: the proxy and the origins; answers "stats"/"reset" lines on stdin."""
    sys.path.insert(0, str(ROOT))
    import trustme
    from tests.servers import LoopbackServer

    from httpx_extensions.testing import AuthProxy, write_user_file

    directory = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    users = write_user_file(directory / "users.txt", [USER])
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with (
        AuthProxy(user_file=users, schemes=("NTLM",)) as proxy,
        LoopbackServer() as origin,
        LoopbackServer(ssl_context=context) as tls_origin,
    ):
        print(
            json.dumps(
                {
                    "proxy": proxy.url,
                    "http": origin.url + "/",
                    "https": tls_origin.url + "/",
                    "ca": str(ca_file),
                }
            ),
            flush=True,
        )
        for line in sys.stdin:
            command = line.strip()
            if command == "reset":
                proxy.reset()
            if command in ("stats", "reset"):
                stats = {
                    "exchanges": proxy.requests_total,
                    "connections": proxy.connections_opened,
                    "handshakes": proxy.handshakes_completed,
                    "tunnels": proxy.tunnels_opened,
                }
                print(json.dumps(stats), flush=True)
    return 0


class Servers:
    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__, "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self._process.stdout is not None
        first = self._process.stdout.readline()
        if not first:
            raise SystemExit("bench/proxy.py: the proxy and origin servers did not start (above)")
        self.urls = json.loads(first)

    def command(self, name: str) -> dict[str, int]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(name + "\n")
        self._process.stdin.flush()
        return dict(json.loads(self._process.stdout.readline()))

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=30)


async def run_exclient(
    urls: dict[str, str], target: str, requests: int, concurrency: int
) -> dict[str, Any]:
    import httpx

    from httpx_extensions import ExClient, NTLMAuth

    context = ssl.create_default_context(cafile=urls["ca"])
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    errors = 0
    done = 0
    async with ExClient(
        proxy=urls["proxy"],
        proxy_auth=NTLMAuth(f"{USER[0]}\\{USER[1]}", USER[2]),
        verify=context,
        limits=limits,
        trust_env=False,
    ) as client:
        queue = iter(range(requests))

        async def worker() -> None:
            nonlocal errors, done
            for _ in queue:
                try:
                    response = await client.get(urls[target])
                    if response.status_code == 200:
                        done += 1
                    else:
                        errors += 1
                except Exception:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"ok": done, "errors": errors, "seconds": elapsed}


def run_requests_ntlm(urls: dict[str, str], requests: int, threads: int) -> dict[str, Any]:
    import requests as requests_lib
    from requests_ntlm import HttpNtlmAuth

    session = requests_lib.Session()
    session.trust_env = False
    session.proxies = {"http": urls["proxy"]}
    session.auth = HttpNtlmAuth(f"{USER[0]}\\{USER[1]}", USER[2])
    adapter = requests_lib.adapters.HTTPAdapter(pool_connections=10, pool_maxsize=10)
    session.mount("http://", adapter)
    lock = threading.Lock()
    counts = {"ok": 0, "errors": 0}
    remaining = [requests]

    def worker() -> None:
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            try:
                ok = session.get(urls["http"], timeout=30).status_code == 200
            except Exception:
                ok = False
            with lock:
                counts["ok" if ok else "errors"] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {**counts, "seconds": time.perf_counter() - started}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--threads", type=int, default=10, help="requests-ntlm threads")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 GETs per client")
    parser.add_argument("--check-args", action="store_true", help="check the options and exit")
    args = parser.parse_args(argv)
    if args.check_args:
        return 0
    if args.quick:
        args.requests = min(args.requests, 200)
    servers = Servers()
    rows = []
    try:
        for label, target in (
            ("ExClient, http:// (forward)", "http"),
            ("ExClient, https:// (CONNECT)", "https"),
        ):
            servers.command("reset")
            result = asyncio.run(
                run_exclient(servers.urls, target, args.requests, args.concurrency)
            )
            stats = servers.command("stats")
            inside = result["ok"] if target == "https" else 0
            rows.append((label, f"c = {args.concurrency}", result, stats, inside))
        try:
            import requests_ntlm  # noqa: F401
        except ImportError:
            print("requests-ntlm is not installed: its row is skipped", file=sys.stderr)
        else:
            servers.command("reset")
            result = run_requests_ntlm(servers.urls, args.requests, args.threads)
            stats = servers.command("stats")
            rows.append(
                ("requests + requests-ntlm, http://", f"{args.threads} threads", result, stats, 0)
            )
    finally:
        servers.close()

    print(
        f"{args.requests:,} GETs per client through an NTLM proxy on loopback; "
        "10 connections to the proxy."
    )
    print()
    print(
        "| client | concurrency | req/s | exchanges with the proxy / req "
        "| proxy connections | proxy handshakes | errors |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, concurrency, result, stats, inside in rows:
        ok = result["ok"]
        rate = ok / result["seconds"] if result["seconds"] else 0.0
        per = (stats["exchanges"] + inside) / ok if ok else float("nan")
        print(
            f"| {label} | {concurrency} | {rate:,.0f} | {per:.3f} | {stats['connections']} | "
            f"{stats['handshakes']} | {result['errors']} |"
        )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve())
    os.environ.setdefault("KRB5_CONFIG", os.devnull)  # NTLM only: no Kerberos lookups
    sys.exit(main(sys.argv[1:]))
