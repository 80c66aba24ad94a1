#!/usr/bin/env python3
"""NTLM benchmark: ExClient + NTLMAuth against the other Python NTLM clients.

The endpoint is ``tests/servers/ntlm.py``'s ``IISLikeServer`` (a real pyspnego acceptor
per TCP connection, IIS-style 401s with a body) running in its own process, with a user
file of precomputed hashes (``store_hashes=True``), or a real Apache. Three server modes:

* ``per-connection`` (IIS default): a connection stays authenticated after its handshake;
* ``apache``: not ours but a real Apache 2.4 + mod_auth_gssapi + gss-ntlmssp
  (``tests/servers/apache.py``; ``scripts/install-apache``), connection-bound like
  ``per-connection``; a C server, so it is not the bottleneck the pure-Python one can be;
* ``per-request`` (IIS ``authPersistSingleRequest``): every request needs a handshake.

Clients, each sending ``GET /`` and reading the full body:

* ``exclient``       ExClient(auth=httpx_extensions.NTLMAuth(...))
* ``httpx-ntlm``     httpx.AsyncClient(auth=httpx_ntlm.HttpNtlmAuth(...))
* ``exsyncclient``   one ExSyncClient(auth=NTLMAuth(...)) shared by min(c, 16) threads, as requests
* ``requests-ntlm``  one requests.Session(auth=requests_ntlm.HttpNtlmAuth(...)) on
                     min(c, 16) threads, HTTPAdapter(pool_connections=pool_maxsize=threads)
* ``aiohttp-ntlm``   aiohttp.ClientSession(middlewares=(aiohttp_ntlm.HttpNtlmAuthMiddleware(...),))
* ``exclient-uvloop``, ``aiohttp-ntlm-uvloop``: the same two on uvloop's event loop

The server process runs on a CPU of its own and the clients on the others (``--no-pin`` not
to), as if on two machines; the IIS-like server runs on uvloop where it is installed. A row
whose server process used 90% or more of its core measured the server, not the clients: the
report marks it "server-bound" and judges the targets on the other rows.

Rows: c = 1, 10, 50 with each library's default pool (httpx/ExClient 100 connections,
aiohttp ``limit=100``), and ``50/10``: c = 50 through a 10-connection pool
(``max_connections=10``, ``limit=10``, requests: 16 threads, ``pool_maxsize=10,
pool_block=True``). Every (client, mode, row) run is a fresh interpreter; the client is
cold (no warm-up: the handshakes are part of what is measured), but made before the
clock starts: the measured part is the requests, not the imports of the client's modules
(``import httpx`` and ``httpx_extensions.NTLMAuth`` took ~220 ms of CPU, ~110 us per
request of a 2,000-request run, while aiohttp-ntlm's were done before) nor the client's
construction. Server counters are reset before and read after the run over a side
channel (a stdlib HTTP server on another port of the server process, outside the NTLM
server's counters).

    .venv/bin/python bench/ntlm.py                      # full run, updates README + results
    .venv/bin/python bench/ntlm.py --quick              # smoke run, writes nothing tracked
    .venv/bin/python bench/ntlm.py --render             # README section again from the results
    .venv/bin/python bench/ntlm.py --clients exclient --modes per-request --rows 50,50/10
    .venv/bin/python bench/ntlm.py serve --mode per-connection   # the server by hand
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _common import fmt_int, fmt_ratio  # noqa: E402

CLIENTS = {
    "exclient": "ExClient + NTLMAuth",
    "exsyncclient": "ExSyncClient + NTLMAuth",
    "httpx-ntlm": "httpx.AsyncClient + httpx-ntlm",
    "requests-ntlm": "requests.Session + requests-ntlm",
    "aiohttp-ntlm": "aiohttp + aiohttp-ntlm",
    "exclient-uvloop": "ExClient + NTLMAuth on uvloop",
    "aiohttp-ntlm-uvloop": "aiohttp + aiohttp-ntlm on uvloop",
}
# The pairs compared in the ratio lines: (ours, theirs).
PAIRS = (("exclient", "aiohttp-ntlm"), ("exclient-uvloop", "aiohttp-ntlm-uvloop"))
# A run whose server process used at least this share of a core measured the server, not
# the clients: its cell is marked "server-bound" and left out of the client comparison.
SERVER_BOUND_PCT = 90.0
# Server modes -> IISLikeServer's auth_per_request; "apache" is a real server instead.
MODES = {"per-connection": False, "per-request": True, "apache": False}
MODE_TITLES = {
    "per-connection": "a connection stays authenticated after its handshake",
    "per-request": "every request needs its own handshake",
    "apache": "Apache 2.4 + mod_auth_gssapi + gss-ntlmssp, connection-bound (a C server)",
}
# row -> (concurrency, pool size or None for the library's default, identities). With two
# identities each request is sent as one of them chosen at random (a service acting for
# several users); a response for the other user counts as a failure ("wrong user").
ROWS = {
    "1": (1, None, 1),
    "10": (10, None, 1),
    "50": (50, None, 1),
    "50/10": (50, 10, 1),
    "50/10x2": (50, 10, 2),
    "50/4x4": (50, 4, 4),
}
REQUESTS_THREADS_MAX = 16
DOMAIN, USER, PASSWORD = "BENCH", "alice", "Bench-Passw0rd!"
USERNAME = f"{DOMAIN}\\{USER}"
# Every identity the server knows: (DOMAIN\user, password).
IDENTITIES = [
    (USERNAME, PASSWORD),
    (f"{DOMAIN}\\bob", "Bench-Passw0rd-2!"),
    (f"{DOMAIN}\\carol", "Bench-Passw0rd-3!"),
    (f"{DOMAIN}\\dave", "Bench-Passw0rd-4!"),
]
TIMEOUT = 5.0  # per request, every client (ExClient's and httpx's default)
EXTRA_PACKAGES = (
    "pyspnego",
    "httpx-ntlm",
    "requests",
    "requests-ntlm",
    "urllib3",
    "aiohttp-ntlm",
)


# --------------------------------------------------------------------------- server process


class _ApacheStats:
    """``IISLikeServer``'s counters, read off a real Apache's access log and /proc."""

    def __init__(self, server) -> None:  # tests.servers.apache.ApacheNTLMServer
        self.server = server
        self.errors: list[str] = []

    def reset(self) -> None:
        self.server.reset_log()

    def _cpu_s(self) -> float:
        # The Apache parent and its worker process (apache2 -DFOREGROUND forks one).
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        pids = [self.server.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.server.pid}/task/{self.server.pid}/children")
            pids += [int(p) for p in children.read_text().split()]
        for pid in pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stats(self) -> dict:
        log = self.server.logged()
        by_port: dict[str, list[int]] = {}
        for port, status in log:
            by_port.setdefault(port, []).append(status)
        return {
            "requests_total": len(log),
            "connections_opened": len(by_port),
            # A connection's handshake: a 401 followed by a 200 on it.
            "handshakes_completed": sum(
                1 for statuses in by_port.values() if 401 in statuses and 200 in statuses
            ),
            "open_connections": None,
            "max_open_connections": len(by_port),
            "errors": self.errors,
            "cpu_s": self._cpu_s(),
        }


def server_loop() -> str:
    """The IIS-like server's default event loop: uvloop where it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def split_cpus(pin: bool) -> tuple[set[int], set[int]] | None:
    """(server CPUs, client CPUs) when *pin* and there are two or more usable CPUs: the
    server gets the last one to itself and the clients the others, as if on two machines.
    Unpinned, the scheduler sometimes put server and client on one core: the same cell
    then ran at half the rate in one run of three (both clients alike)."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pin or len(usable) < 2:
        return None
    return {usable[-1]}, set(usable[:-1])


def serve(argv: list[str]) -> int:
    """``ntlm.py serve``: IISLikeServer + a stats side channel; prints one JSON line."""
    p = argparse.ArgumentParser(prog="ntlm.py serve")
    p.add_argument("--mode", choices=list(MODES), default="per-connection")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default=server_loop(),
        help="the IIS-like server's event loop (default: uvloop where installed, so the "
        "pure-Python server is less of a bottleneck; Apache ignores it)",
    )
    p.add_argument(
        "--user-file",
        type=Path,
        help="NTLM_USER_FILE to use (default: a temporary one with the bench user, hashes)",
    )
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.servers.ntlm import IISLikeServer, write_user_file

    tmp = None
    if args.user_file is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-ntlm-")
        args.user_file = write_user_file(
            Path(tmp.name, "users.txt"),
            [(DOMAIN, *user.split("\\")[1:], pw) for user, pw in IDENTITIES],
            store_hashes=args.mode != "apache",  # gss-ntlmssp reads passwords only
        )
    if args.mode == "apache":
        from tests.servers.apache import ApacheNTLMServer

        server = ApacheNTLMServer(args.user_file)
        apache = _ApacheStats(server)
        stats, reset = apache.stats, apache.reset
    else:
        if args.loop == "uvloop":  # the server thread's asyncio.new_event_loop() is uvloop's
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        iis = IISLikeServer(user_file=args.user_file, auth_per_request=MODES[args.mode])
        server = iis

        def stats() -> dict:
            ru = resource.getrusage(resource.RUSAGE_SELF)
            return {
                "requests_total": iis.requests_total,
                "connections_opened": iis.connections_opened,
                "handshakes_completed": iis.handshakes_completed,
                "open_connections": iis.open_connections,
                "max_open_connections": iis.max_open_connections,
                "errors": [f"{type(e).__name__}: {e}" for e in iis.errors][:20],
                "cpu_s": ru.ru_utime + ru.ru_stime,
            }

        reset = iis.reset

    class Control(BaseHTTPRequestHandler):
        def _answer(self, reset_first: bool) -> None:
            if self.path != "/stats":
                self.send_error(404)
                return
            if reset_first:
                reset()
            body = json.dumps(stats()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(reset_first=False)

        def do_POST(self) -> None:  # POST /stats: reset the counters, then read them
            self._answer(reset_first=True)

        def log_message(self, *args: object) -> None:
            pass

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
        threading.Thread(target=control.serve_forever, daemon=True).start()
        info = {
            "url": server.url,
            "stats_url": f"http://127.0.0.1:{control.server_address[1]}/stats",
            "mode": args.mode,
            "loop": None if args.mode == "apache" else args.loop,
            "pid": os.getpid(),
        }
        print(json.dumps(info), flush=True)
        if sys.stdin.isatty():
            print(
                f"NTLM server ({args.mode}) at {server.url}, user {USERNAME!r} / "
                f"{PASSWORD!r}; counters: {info['stats_url']}; Ctrl-C stops it",
                file=sys.stderr,
            )

        def stdin_closed() -> None:  # the orchestrator closes our stdin to stop us
            with contextlib.suppress(Exception):
                sys.stdin.read()
            if not sys.stdin.isatty():
                stop.set()

        threading.Thread(target=stdin_closed, daemon=True).start()
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        control.shutdown()
    if tmp is not None:
        tmp.cleanup()
    return 0


class ServerProcess:
    """``ntlm.py serve`` as a child process; use as a context manager."""

    def __init__(self, mode: str, cpus: set[int] | None = None) -> None:
        self.mode = mode
        self.cpus = cpus
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    def __enter__(self) -> ServerProcess:
        cpus = self.cpus
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", "--mode", self.mode],
            # Set before exec, so every thread of the server (and Apache, its child) has it.
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C is ours to handle
        )
        line = self.proc.stdout.readline()
        if not line:
            self.__exit__()
            raise RuntimeError(f"the NTLM server ({self.mode}) did not start")
        self.info = json.loads(line)
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _common.stop_process(proc)


def read_stats(stats_url: str, reset: bool = False) -> dict:
    req = urllib.request.Request(stats_url, method="POST" if reset else "GET", data=None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------- worker


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


class _Identities:
    """Which identity each request goes as (seeded: the same sequence for every client)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._random = random.Random(1)

    def next(self) -> int:
        return self._random.randrange(self.count) if self.count > 1 else 0

    def check(self, index: int, status: int, headers, body: bytes) -> str | None:
        """None for a 200 for that identity, else the kind of failure."""
        if status != 200:
            return f"HTTP {status}"
        if self.count == 1:
            return None
        user = headers.get("X-Remote-User")  # Apache; the IIS-like server: in the JSON body
        if user is None:
            user = json.loads(body).get("user")
        return None if user == IDENTITIES[index][0] else "wrong user"


def _make_async_client(spec: dict):
    """(closer coroutine function, async fn doing one request -> None if OK else a kind)."""
    name, pool = spec["client"], spec["pool"]
    ids = _Identities(spec["identities"])
    if name == "aiohttp-ntlm":
        import aiohttp
        from aiohttp_ntlm import HttpNtlmAuthMiddleware

        middlewares = [(HttpNtlmAuthMiddleware(u, pw),) for u, pw in IDENTITIES[: ids.count]]
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool or 100),
            middlewares=middlewares[0],
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        )

        async def get(url: str) -> str | None:
            i = ids.next()
            # aiohttp >= 3.12: per-request middlewares replace the session's.
            async with session.get(url, middlewares=middlewares[i]) as resp:
                body = await resp.read()
                return ids.check(i, resp.status, resp.headers, body)

        return session.close, get

    import httpx

    kwargs: dict = {"timeout": TIMEOUT}
    if pool:
        kwargs["limits"] = httpx.Limits(max_connections=pool)
    if name == "exclient":
        from httpx_extensions import ExClient, NTLMAuth

        auths = [NTLMAuth(u, pw) for u, pw in IDENTITIES[: ids.count]]
        client = ExClient(auth=auths[0], **kwargs)
    elif name == "httpx-ntlm":
        from httpx_ntlm import HttpNtlmAuth

        auths = [HttpNtlmAuth(u, pw) for u, pw in IDENTITIES[: ids.count]]
        client = httpx.AsyncClient(auth=auths[0], **kwargs)
    else:
        raise ValueError(name)

    async def get(url: str) -> str | None:
        i = ids.next()
        # Not streaming: the body is read in full.
        resp = await client.get(url, auth=auths[i]) if ids.count > 1 else await client.get(url)
        return ids.check(i, resp.status_code, resp.headers, resp.content)

    return client.aclose, get


def _run_requests(spec: dict, url: str) -> tuple[dict, dict]:
    """requests + requests-ntlm: one Session shared by min(c, 16) threads; or (exsyncclient)
    one ExSyncClient shared by as many threads, the same way. Returns the counts and the
    measured times (the threads' work: the session is made before, closed after)."""
    threads = min(spec["concurrency"], REQUESTS_THREADS_MAX)
    size = spec["pool"] or threads
    ids = _Identities(spec["identities"])
    session: typing.Any
    if spec["client"] == "exsyncclient":
        import httpx

        from httpx_extensions import ExSyncClient, NTLMAuth

        auths: list[typing.Any] = [NTLMAuth(u, pw) for u, pw in IDENTITIES[: ids.count]]
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        session = ExSyncClient(auth=auths[0], limits=limits)
    else:
        import requests
        from requests.adapters import HTTPAdapter
        from requests_ntlm import HttpNtlmAuth

        session = requests.Session()
        auths = [HttpNtlmAuth(u, pw) for u, pw in IDENTITIES[: ids.count]]
        session.auth = auths[0]
        adapter = HTTPAdapter(
            pool_connections=size, pool_maxsize=size, pool_block=bool(spec["pool"])
        )
        session.mount("http://", adapter)

    lock = threading.Lock()
    state = {"remaining": spec["requests"], "ok": 0, "failed": 0}
    kinds: Counter[str] = Counter()
    deadline = time.monotonic() + spec["max_seconds"]

    def worker() -> None:
        while True:
            with lock:
                if state["remaining"] <= 0 or time.monotonic() > deadline:
                    return
                state["remaining"] -= 1
            try:
                i = ids.next()
                if ids.count > 1:
                    resp = session.get(url, timeout=TIMEOUT, auth=auths[i])
                else:
                    resp = session.get(url, timeout=TIMEOUT)
                # .content reads the body in full
                bad = ids.check(i, resp.status_code, resp.headers, resp.content)
            except Exception as exc:
                bad = _kind(exc)
            with lock:
                if bad is None:
                    state["ok"] += 1
                else:
                    state["failed"] += 1
                    kinds[bad] += 1

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    with _common.measured() as m:
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=max(0.0, deadline - time.monotonic()) + 2 * TIMEOUT + 5)
    alive = sum(t.is_alive() for t in pool)
    if alive:
        kinds["worker stuck"] += alive
    session.close()
    with lock:
        counts = {
            "ok": state["ok"],
            "failed": state["failed"],
            "kinds": dict(kinds),
            "stopped_early": state["remaining"] > 0,
            "threads": threads,
            "pool_maxsize": size,
            "pool_block": bool(spec["pool"]),
        }
    return counts, m


async def _run_async(spec: dict, url: str) -> tuple[dict, dict]:
    """The counts and the measured times: the requests only. The client is made (its
    imports and TLS context included) before the clock starts and closed after it stops,
    as bench/plain.py does; it is still cold, so its handshakes are measured."""
    closer, get = _make_async_client(spec)
    try:
        with _common.measured() as m:
            res = await _common.drive(
                get, url, spec["requests"], spec["concurrency"], spec["max_seconds"]
            )
        return res, m
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(closer(), timeout=10)


def worker_main(spec: dict) -> None:
    url = spec["url"] + "/"
    on_uvloop = spec["client"].endswith("-uvloop")
    spec = {**spec, "client": spec["client"].removesuffix("-uvloop")}
    try:
        if on_uvloop:
            import uvloop
        if spec["client"] == "requests-ntlm":
            import requests_ntlm  # noqa: F401
        elif spec["client"] == "aiohttp-ntlm":
            import aiohttp_ntlm  # noqa: F401
        elif spec["client"] == "httpx-ntlm":
            import httpx_ntlm  # noqa: F401
        else:
            import httpx_extensions  # noqa: F401
    except ImportError as exc:
        _common.emit(_common.import_error(exc))

    s0 = read_stats(spec["stats_url"], reset=True)
    if spec["client"] in ("requests-ntlm", "exsyncclient"):
        res, m = _run_requests(spec, url)
    elif on_uvloop:
        # asyncio.run(..., loop_factory=uvloop.new_event_loop) on Python >= 3.12.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            res, m = runner.run(_run_async(spec, url))
    else:
        res, m = asyncio.run(_run_async(spec, url))
    s1 = read_stats(spec["stats_url"])

    run = {**res, **_common.rates(res, m, per_1k="client_cpu_ms_per_1k")}
    done, wall = run["completed"], run["wall_s"]
    _common.emit(
        {
            **run,
            "exchanges": s1["requests_total"],
            "exchanges_per_request": s1["requests_total"] / done if done else None,
            "conns_opened": s1["connections_opened"],
            "max_open_connections": s1["max_open_connections"],
            "handshakes": s1["handshakes_completed"],
            "server_errors": s1["errors"],
            "server_cpu_pct": 100 * (s1["cpu_s"] - s0["cpu_s"]) / wall if wall > 0 else None,
        }
    )


# --------------------------------------------------------------------------- report


def row_label(row: str) -> str:
    c, pool, identities = ROWS[row]
    label = f"{c} via {pool} conns" if pool else str(c)
    return label + (f", {identities} identities" if identities > 1 else "")


def build_report(data: dict) -> tuple[list[str], list[str], list[str]]:
    """Markdown tables (one per mode), ratio/target lines and footnotes."""
    cfg = data["config"]
    res = {(r["mode"], r["row"], r["client"]): r for r in data["results"]}
    notes: list[str] = []
    tables: list[str] = []
    for mode in cfg["modes"]:
        rows = [
            f"**Server mode `{mode}`** ({MODE_TITLES[mode]})",
            "",
            "| c | client | successful req/s | ExClient ÷ this | failed / sent "
            "| failures by kind | HTTP exchanges / request | TCP conns opened | handshakes "
            "| client CPU ms / 1k req |",
            "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for row in cfg["rows"]:
            ex = (res.get((mode, row, "exclient")) or {}).get("result") or {}
            for name in cfg["clients"]:
                label = f"**{CLIENTS[name]}**" if name == "exclient" else CLIENTS[name]
                entry = res.get((mode, row, name)) or {}
                r = entry.get("result") or {}
                if "req_per_s" not in r:
                    why = _common.why_not_run(entry, r)
                    rows.append(f"| {row_label(row)} | {label} | n/a | | | {why} | | | | |")
                    continue
                marks: list[str] = []
                if r["stopped_early"]:
                    notes.append(
                        f"{CLIENTS[name]}, `{mode}`, c={row_label(row)}: hit the "
                        f"{entry['max_seconds']:g} s budget after {r['completed']:,} of "
                        f"{entry['requests']:,} requests; the rate is over the requests done."
                    )
                    marks.append(f"[^{len(notes)}]")
                if entry["requests"] != cfg["requests"] and not r["stopped_early"]:
                    notes.append(
                        f"{CLIENTS[name]}, `{mode}`, c={row_label(row)}: "
                        f"{entry['requests']:,} requests instead of {cfg['requests']:,} "
                        "(slow peer, to keep the run short)."
                    )
                    marks.append(f"[^{len(notes)}]")
                if r.get("server_errors"):
                    notes.append(
                        f"{CLIENTS[name]}, `{mode}`, c={row_label(row)}: server-side errors: "
                        + "; ".join(r["server_errors"][:3])
                    )
                    marks.append(f"[^{len(notes)}]")
                if name in ("requests-ntlm", "exsyncclient"):
                    label += (
                        f" ({r['threads']} thread{'s' if r['threads'] != 1 else ''}, "
                        f"pool {r['pool_maxsize']}"
                        + (", blocking" if r["pool_block"] else "")
                        + ")"
                    )
                kinds = ", ".join(
                    f"{k}: {v:,}" for k, v in sorted(r["kinds"].items(), key=lambda kv: -kv[1])
                )
                ratio = (
                    "1.00x"
                    if name == "exclient"
                    else fmt_ratio(ex.get("req_per_s"), r["req_per_s"])
                )
                rows.append(
                    f"| {row_label(row)} | {label} | {fmt_int(r['req_per_s'])}{''.join(marks)} "
                    f"| {ratio} | {r['failed']:,} / {r['completed']:,} | {kinds or '-'} "
                    f"| {r['exchanges_per_request']:.2f} | {r['conns_opened']:,} "
                    f"| {r['handshakes']:,} | {fmt_int(r['client_cpu_ms_per_1k'])} |"
                )
        tables.append("\n".join(rows))

    def rate(mode: str, row: str, name: str) -> float | None:
        r = (res.get((mode, row, name)) or {}).get("result") or {}
        return r.get("req_per_s")

    lines: list[str] = []
    targets = {"requests-ntlm": 3.0, "httpx-ntlm": 10.0, "aiohttp-ntlm": 1.0}
    if "exclient" in cfg["clients"]:
        for mode in cfg["modes"]:
            for row in ("50", "50/10"):
                if row not in cfg["rows"]:
                    continue
                parts = []
                for other in cfg["clients"]:
                    if other == "exclient" or other.endswith("-uvloop"):
                        continue  # the uvloop pair has its own line below
                    a, b = rate(mode, row, "exclient"), rate(mode, row, other)
                    text = f"{CLIENTS[other]} {fmt_ratio(a, b)}"
                    if mode == "per-connection" and row == "50" and other in targets:
                        goal = targets[other]
                        met = a is not None and b is not None and (b == 0 or a / b >= goal)
                        text += f" (target ≥ {goal:g}x: {'met' if met else '**not met**'})"
                    parts.append(text)
                head = (
                    "**c=50, `per-connection`**"
                    if (mode == "per-connection" and row == "50")
                    else f"c={row_label(row)}, `{mode}`"
                )
                lines.append(f"- ExClient successful req/s ÷ peer's, {head}: " + "; ".join(parts))
        lines += _pair_lines(cfg, res)
        ex_runs = [
            r["result"]
            for r in data["results"]
            if r["client"] in ("exclient", "exclient-uvloop")
            and "req_per_s" in (r.get("result") or {})
        ]
        ex_failed = sum(r["failed"] for r in ex_runs)
        ex_sent = sum(r["completed"] for r in ex_runs)
        lines.append(
            f"- ExClient failures over all its runs: {ex_failed:,} of {ex_sent:,} requests "
            f"(target 0: {'met' if ex_failed == 0 else '**not met**'})"
        )
    return tables, lines, notes


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def server_bound(*cells: dict) -> bool:
    """Whether the server, not the clients, set the pace of these cells: the median of a
    cell's runs' server CPU reached SERVER_BOUND_PCT of a core."""
    for cell in cells:
        cpu = _median([r["server_cpu_pct"] for r in cell.get("runs") or [] if "req_per_s" in r])
        if cpu is not None and cpu >= SERVER_BOUND_PCT:
            return True
    return False


def _pair_lines(cfg: dict, res: dict) -> list[str]:
    """Per mode and pair (ExClient / aiohttp-ntlm, on each loop): the ratio of the medians of
    every row with each side's slowest and fastest run, server-bound rows marked; the
    targets (issue 12: >= 1.2x on asyncio, >= 1.0x on uvloop) are judged on the other rows."""
    lines: list[str] = []
    for ours, theirs in PAIRS:
        if ours not in cfg["clients"] or theirs not in cfg["clients"]:
            continue
        goal = 1.0 if ours.endswith("-uvloop") else 1.2
        for mode in cfg["modes"]:
            cells, missed, judged = [], [], 0
            for row in cfg["rows"]:
                a, b = res.get((mode, row, ours)) or {}, res.get((mode, row, theirs)) or {}
                bound = server_bound(a, b)
                where = f"c={row_label(row)}" + (" (server-bound)" if bound else "")
                cells.append((where, a.get("runs") or [], b.get("runs") or []))
                ra, rb = _common.median_rate(cells[-1][1]), _common.median_rate(cells[-1][2])
                if bound or ra is None or rb is None:
                    continue
                judged += 1
                if rb and ra / rb < goal:
                    missed.append(row_label(row))
            line = _common.spread_line(f"{CLIENTS[ours]} / {CLIENTS[theirs]}, `{mode}`", cells)
            verdict = (
                f"target ≥ {goal:g}x on the {judged} row{'s' if judged != 1 else ''} "
                "not server-bound: "
                + ("met" if not missed else "**not met** at " + "; ".join(missed))
                if judged
                else "every row server-bound: no verdict"
            )
            lines.append(f"{line} — {verdict}")
    return lines


def render_markdown(data: dict) -> str:
    cfg = data["config"]
    tables, ratios, notes = build_report(data)
    slow = {n: k for n, k in cfg["requests_per_client"].items() if k != cfg["requests"]}
    lines = [
        _common.facts_line(data),
        "",
        f"`GET /` to `IISLikeServer` (own process, hashed user file), {cfg['requests']:,} "
        "requests per run"
        + (" (" + ", ".join(f"{CLIENTS[n]}: {k:,}" for n, k in slow.items()) + ")" if slow else "")
        + f", cold client (handshakes included), {cfg['max_seconds']:g} s budget per run, "
        f"{TIMEOUT:g} s timeout per request, best of up to {cfg['repeat']} runs by "
        f"successful req/s (a cell is not run again once its runs add up to "
        f"{cfg['repeat_seconds']:g} s or one hit the budget). c = worker coroutines "
        f"sharing one client; requests-ntlm: min(c, {REQUESTS_THREADS_MAX}) threads sharing "
        "one Session. Successful req/s = 200 responses / wall time. Failed = non-200 "
        "responses or exceptions. HTTP exchanges / request = requests the server received "
        "(every 401 leg included) / requests sent. TCP conns and handshakes are server "
        "counters."
        + (
            f" The server process ran on CPU {', '.join(map(str, cfg['cpus']['server']))}, "
            f"the clients on CPU {', '.join(map(str, cfg['cpus']['clients']))}."
            if cfg.get("cpus")
            else ""
        )
        + (
            f" The IIS-like server's event loop: {cfg['server_loop']}."
            if cfg.get("server_loop")
            else ""
        ),
        "",
    ]
    for table in tables:
        lines += [table, ""]
    lines += ratios
    peaks = {}
    for cell in data["results"]:
        cpu = (cell.get("result") or {}).get("server_cpu_pct")
        if cpu is not None:
            peaks[cell["mode"]] = max(cpu, peaks.get(cell["mode"], 0.0))
    if peaks:
        lines += [
            "",
            "Server process CPU during the measured parts, at most: "
            + ", ".join(f"`{mode}` {pct:.0f}%" for mode, pct in peaks.items())
            + " of one core (the IIS-like server is pure Python; Apache is C). Rows marked "
            f"server-bound had a median server CPU of {SERVER_BOUND_PCT:g}% or more.",
        ]
    lines += _common.tail_lines({"results": []}, "result", "", notes)
    return "\n".join(lines)


INTRO = """\
## NTLM (`bench/ntlm.py`)

ExClient + `httpx_extensions.NTLMAuth` against `httpx.AsyncClient` + `httpx-ntlm`,
`requests.Session` + `requests-ntlm` and `aiohttp` + `aiohttp-ntlm`, all logging on to the
IIS-like NTLM server of the test suite (`tests/servers/ntlm.py`: one pyspnego acceptor per
TCP connection, 401s with a body), run in its own process, and a real Apache 2.4 +
mod_auth_gssapi + gss-ntlmssp (`tests/servers/apache.py`). Three server modes:
`per-connection` (IIS default, a connection stays authenticated), `per-request`
(`authPersistSingleRequest`, a handshake for every request) and `apache` (connection-bound,
a C server that leaves the CPU to the clients; offers only `Negotiate`). Rows: c = 1, 10,
50 with each library's default pool, c = 50 through a 10-connection pool, and the same with
two and four identities. ExClient and aiohttp also run on uvloop. The server has a CPU of its
own and the clients the other; the pure-Python IIS-like server runs on uvloop, and a row it
saturates (90% of its core or more) is marked server-bound: it measures the server.

How to run this suite alone, from the repository root:

```sh
bench/run --only ntlm           # this suite and its chart, 5-10 min (bench/run-ntlm does the same)
bench/run --only ntlm --quick   # smoke run; writes nothing tracked
.venv/bin/python bench/ntlm.py --clients exclient,aiohttp-ntlm --modes per-request --rows 50
.venv/bin/python bench/ntlm.py serve --mode per-request   # the server alone (prints its URL)
```

`aiohttp-ntlm` 0.1.4 declares `pyspnego<0.12`; the project runs on pyspnego 0.12, so
`bench/run` installs it with `--no-deps` (its code uses only `spnego.client`, which
0.12 keeps; `pip check` will list the pin). Each (client, mode, row) run is its own
interpreter; clients are interleaved per row. A full run rewrites
`bench/results/ntlm.json` (raw numbers, machine facts) and this section; `bench/run`
then redraws the chart.
"""

SUITE = _common.Suite(
    "ntlm", INTRO, render_markdown, result_key="result", chart_title="NTLM: req/s per client"
)


# --------------------------------------------------------------------------- orchestrator


def _default_modes() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from tests.servers.apache import apache_unavailable

    reason = apache_unavailable()
    if reason is None:
        return list(MODES)
    print(f"ntlm.py: no apache mode: {reason}", file=sys.stderr)
    return [mode for mode in MODES if mode != "apache"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = SUITE.parser(
        __doc__,
        CLIENTS,
        requests=(2000, "requests"),
        repeat_help="runs per cell, best successful req/s kept (default 3); see --repeat-seconds",
        quick_help="smoke run: 200 requests, no README",
    )
    p.add_argument(
        "--slow-requests",
        type=int,
        default=0,
        help="requests per run for httpx-ntlm, which runs at a few dozen req/s under "
        "concurrency (default 0 = same as --requests; the budget caps it anyway)",
    )
    p.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}"
    )
    p.add_argument(
        "--modes",
        default=",".join(_default_modes()),
        help=f"comma-separated subset of {','.join(MODES)} (default: all; apache only where "
        "scripts/install-apache has installed it)",
    )
    p.add_argument(
        "--repeat-seconds",
        type=float,
        default=10,
        help="no further runs of a cell once its runs add up to this many seconds "
        "(default 10), nor after one hit the budget",
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server to one CPU and the clients to the others",
    )
    args = p.parse_args(argv)
    quick = {"requests": 200, "slow_requests": 200, "max_seconds": 20.0, "repeat": 1}
    return SUITE.settle(p, args, quick, {"rows": ROWS, "modes": MODES, "clients": CLIENTS})


def _wants_another_run(cell: dict, args: argparse.Namespace) -> bool:
    """Best of up to --repeat runs, but a cell whose runs add up to --repeat-seconds (or
    that hit the budget, or failed) is a long enough sample: no more runs."""
    runs = cell["runs"]
    if not runs:
        return True
    if len(runs) >= args.repeat or any("req_per_s" not in r or r["stopped_early"] for r in runs):
        return False
    return sum(r["wall_s"] for r in runs) < args.repeat_seconds


def _numbers(r: dict) -> str:
    return (
        f"{r['req_per_s']:>7,.0f} req/s  failed {r['failed']:>5}/{r['completed']:<5} "
        f"exch/req {r['exchanges_per_request']:.2f}  conns {r['conns_opened']:<5} "
        f"hs {r['handshakes']:<5} wall {r['wall_s']:.1f}s "
        f"cpu {r['client_cpu_pct'] or 0:.0f}%/srv {r['server_cpu_pct'] or 0:.0f}%"
        + (f"  {r['kinds']}" if r["kinds"] else "")
    )


def measure(args: argparse.Namespace) -> int:
    per_client = {
        n: (args.slow_requests or args.requests) if n == "httpx-ntlm" else args.requests
        for n in args.clients
    }
    cfg = {
        "requests": args.requests,
        "requests_per_client": per_client,
        "rows": args.rows,
        "modes": args.modes,
        "clients": args.clients,
        "max_seconds": args.max_seconds,
        "timeout_s": TIMEOUT,
        "requests_threads_max": REQUESTS_THREADS_MAX,
        "event_loop": "asyncio; *-uvloop clients: uvloop",
        "server_loop": server_loop(),
        "warmup": 0,
        "repeat": args.repeat,
        "repeat_seconds": args.repeat_seconds,
    }
    server_facts = {
        "class": "tests.servers.ntlm.IISLikeServer",
        "schemes": ["Negotiate", "NTLM"],
        "user_file": "store_hashes=True",
        "process": "separate",
    }
    cpus = split_cpus(not args.no_pin)
    cfg["cpus"] = None if cpus is None else {"server": sorted(cpus[0]), "clients": sorted(cpus[1])}
    if cpus is not None:
        os.sched_setaffinity(0, cpus[1])  # the client workers inherit it
    data = _common.new_results("ntlm", cfg, server_facts, EXTRA_PACKAGES)
    cells = {
        (mode, row, name): {
            "client": name,
            "mode": mode,
            "row": row,
            "concurrency": ROWS[row][0],
            "pool": ROWS[row][1],
            "identities": ROWS[row][2],
            "requests": per_client[name],
            "max_seconds": args.max_seconds,
            "runs": [],
            "result": None,
        }
        for mode in args.modes
        for row in args.rows
        for name in args.clients
    }

    def loop(skipped: dict[str, str]) -> None:
        for mode in args.modes:
            with ServerProcess(mode, None if cpus is None else cpus[0]) as server:
                print(f"{mode}: NTLM server at {server.info['url']}", file=sys.stderr, flush=True)

                def run_cell(cell: dict, info: dict = server.info) -> dict:
                    spec = {k: v for k, v in cell.items() if k not in ("runs", "result")}
                    spec.update(url=info["url"], stats_url=info["stats_url"])
                    return _common.run_worker(
                        Path(__file__).resolve(), spec, timeout=spec["max_seconds"] + 90
                    )

                for row in args.rows:
                    _common.run_interleaved(
                        [cells[(mode, row, name)] for name in args.clients],
                        args.repeat,
                        lambda cell: _wants_another_run(cell, args),
                        run_cell,
                        _numbers,
                        skipped,
                    )

    return SUITE.run(args, data, cells.values(), loop)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    return SUITE.main(parse_args(argv), worker_main, measure)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
