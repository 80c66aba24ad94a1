#!/usr/bin/env python3
"""Plain-GET benchmark: ExClient vs httpx.AsyncClient vs aiohttp.ClientSession.

Beside them, the sync clients (ExSyncClient, httpx.Client, requests.Session) from
min(c, 100) threads sharing one client: ``--clients exsyncclient,httpx-sync,requests``.

Each client sends ``GET /`` to a private nginx on 127.0.0.1 that answers
``200 "ok"``, from C worker coroutines sharing one client (asyncio), each
reading the full body, until N requests are done; ``max_connections=100``
(httpx: ``httpx.Limits(max_connections=100)``; aiohttp:
``TCPConnector(limit=100)``), everything else at the library defaults.

Every (client, concurrency) run is a fresh interpreter (subprocess) that does a
warm-up first (not measured), then measures wall time, its own CPU time
(user+sys, getrusage) and the TCP connections it opened (nginx stub_status
``accepts`` delta). A run that exceeds ``--max-seconds`` is stopped: requests
still in flight are cancelled and the rate is over the completed ones.

    .venv/bin/python bench/plain.py                 # full run, updates README + results
    .venv/bin/python bench/plain.py --quick         # smoke run, writes nothing tracked
    .venv/bin/python bench/plain.py --render        # README section again from the results
    .venv/bin/python bench/plain.py --requests 2000 --clients httpx,aiohttp --concurrency 1,100
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _common import fmt_int, fmt_ratio  # noqa: E402

CLIENTS = {
    "exclient": "ExClient",
    "httpx": "httpx.AsyncClient",
    "exclient-httpx2": "ExClient on httpx2 (httpx_extensions.httpx2)",
    "httpx2": "httpx2.AsyncClient",
    "aiohttp": "aiohttp.ClientSession",
    "raw": "raw asyncio (practical limit)",
    "exclient-uvloop": "ExClient on uvloop",
    "aiohttp-uvloop": "aiohttp on uvloop",
    "raw-uvloop": "raw asyncio on uvloop (practical limit)",
    "exsyncclient": "ExSyncClient (threads)",
    "httpx-sync": "httpx.Client (threads)",
    "requests": "requests.Session (threads)",
}
#: The sync clients: c threads share one client, up to this many (a thread each is costly).
SYNC_CLIENTS = ("exsyncclient", "httpx-sync", "requests")
SYNC_THREADS_MAX = 100
#: The URL path of each --body choice, and what nginx answers there.
BODIES = {"ok": ("/", b"ok"), "4k": ("/4k", _common.BODY_4K)}
REFERENCE = "httpx"  # the client ExClient replaces; ratios are against it (and aiohttp)
MAX_CONNECTIONS = 100


# --------------------------------------------------------------------------- worker


class _RawClient:
    """The practical limit: a hand-written keep-alive HTTP/1.1 GET on asyncio streams.

    No pool logic beyond a free-list of connections, no header parsing beyond
    Content-Length, no response object: what a client cannot go below on this loop.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._opened = 0
        self._available = asyncio.Semaphore(limit)

    async def get(self, url: str) -> bytes:
        rest = url.partition("://")[2]
        netloc, _, path = rest.partition("/")
        host, _, port = netloc.partition(":")
        async with self._available:
            if self._free:
                reader, writer = self._free.pop()
            else:
                reader, writer = await asyncio.open_connection(host, int(port))
                self._opened += 1
            writer.write(b"GET /%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), netloc.encode()))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            self._free.append((reader, writer))
            return body

    async def aclose(self) -> None:
        for _, writer in self._free:
            writer.close()
        self._free = []


def _make_client(name: str, expected: bytes):
    """Return (async context manager client, async fn doing one request -> None if OK)."""
    name = name.removesuffix("-uvloop")
    if name == "raw":
        raw = _RawClient(MAX_CONNECTIONS)

        async def get_raw(url: str) -> str | None:
            return None if await raw.get(url) == expected else "bad response"

        return raw, get_raw
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS))

        async def get(url: str) -> str | None:
            async with session.get(url) as resp:
                body = await resp.read()
                return None if resp.status == 200 and body == expected else "bad response"

        return session, get

    if name in ("httpx2", "exclient-httpx2"):
        import httpx2 as httpx  # the same API under another name
    else:
        import httpx

    if name in ("httpx", "httpx2"):
        cls = httpx.AsyncClient
    elif name == "exclient":
        from httpx_extensions import ExClient as cls
    elif name == "exclient-httpx2":
        from httpx_extensions.httpx2 import ExClient as cls
    else:
        raise ValueError(name)
    client = cls(limits=httpx.Limits(max_connections=MAX_CONNECTIONS))

    async def get(url: str) -> str | None:
        resp = await client.get(url)  # not streaming: the body is read in full
        return None if resp.status_code == 200 and resp.content == expected else "bad response"

    return client, get


def _make_sync_client(name: str, expected: bytes) -> tuple[Any, Callable[[str], str | None]]:
    """Return (client with close(), fn doing one request -> None if OK), for threads."""
    if name == "requests":
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        # One pool of MAX_CONNECTIONS that blocks when all are busy, as the others' limit.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=MAX_CONNECTIONS, pool_block=True)
        session.mount("http://", adapter)

        def get_requests(url: str) -> str | None:
            resp = session.get(url)
            ok = resp.status_code == 200 and resp.content == expected
            return None if ok else "bad response"

        return session, get_requests
    import httpx

    if name == "exsyncclient":
        from httpx_extensions import ExSyncClient as cls
    elif name == "httpx-sync":
        cls = httpx.Client
    else:
        raise ValueError(name)
    client = cls(limits=httpx.Limits(max_connections=MAX_CONNECTIONS))

    def get(url: str) -> str | None:
        resp = client.get(url)
        return None if resp.status_code == 200 and resp.content == expected else "bad response"

    return client, get


def _run_sync_worker(spec: dict) -> dict:
    base = spec["base_url"]
    path, expected = BODIES[spec["body"]]
    url = base + path
    try:
        client, get = _make_sync_client(spec["client"], expected)
    except ImportError as exc:
        return _common.import_error(exc)
    threads = min(spec["concurrency"], SYNC_THREADS_MAX)
    try:
        s0 = _common.read_status(base)
        warm = _common.drive_threads(get, url, spec["warmup"], threads, spec["warmup_seconds"])
        s1 = _common.read_status(base)
        srv0 = _common.cpu_seconds_of(spec.get("server_pid"))
        with _common.measured() as m:
            res = _common.drive_threads(get, url, spec["requests"], threads, spec["max_seconds"])
        srv1 = _common.cpu_seconds_of(spec.get("server_pid"))
        s2 = _common.read_status(base)
    finally:
        client.close()
    return _result(spec, res, m, warm, (s0, s1, s2), (srv0, srv1), {})


async def _run_worker(spec: dict) -> dict:
    base = spec["base_url"]
    path, expected = BODIES[spec["body"]]
    url = base + path
    try:
        client, get = _make_client(spec["client"], expected)
    except ImportError as exc:
        return _common.import_error(exc)
    out: dict = {}
    try:
        s0 = _common.read_status(base)
        warm = await _common.drive(
            get, url, spec["warmup"], spec["concurrency"], spec["warmup_seconds"]
        )
        s1 = _common.read_status(base)

        srv0 = _common.cpu_seconds_of(spec.get("server_pid"))
        with _common.measured() as m:
            res = await _common.drive(
                get, url, spec["requests"], spec["concurrency"], spec["max_seconds"]
            )
        srv1 = _common.cpu_seconds_of(spec.get("server_pid"))

        s2 = _common.read_status(base)
    finally:
        closer = client.close() if spec["client"].startswith("aiohttp") else client.aclose()
        try:
            await asyncio.wait_for(closer, timeout=10)
        except Exception as exc:
            out["close_error"] = f"{type(exc).__name__}: {exc}"

    return _result(spec, res, m, warm, (s0, s1, s2), (srv0, srv1), out)


def _result(
    spec: dict,
    res: dict,
    m: dict,
    warm: dict,
    status: tuple[Any, Any, Any],
    server_cpu: tuple[float | None, float | None],
    out: dict,
) -> dict:
    s0, s1, s2 = status
    srv0, srv1 = server_cpu
    warm_conns, _ = _common.opened_between(s0, s1)
    conns, served = _common.opened_between(s1, s2)
    wall = m["wall_s"]
    out.update(
        {
            **_common.rates(res, m, per_1k="cpu_ms_per_1k"),
            "ok": res["ok"],
            "errors": res["failed"],
            "error_kinds": res["kinds"],
            "stopped_early": res["stopped_early"],
            "cpu_user_s": m["cpu_user_s"],
            "cpu_sys_s": m["cpu_sys_s"],
            "server_cpu_pct": 100 * (srv1 - srv0) / wall
            if srv0 is not None and srv1 is not None
            else None,
            "conns_opened": conns,
            "server_requests": served,
            "warmup": {
                "requests": spec["warmup"],
                "ok": warm["ok"],
                "errors": warm["failed"],
                "error_kinds": warm["kinds"],
                "stopped_early": warm["stopped_early"],
                "conns_opened": warm_conns,
            },
        }
    )
    return out


def worker_main(spec: dict) -> None:
    if spec["client"] in SYNC_CLIENTS:
        _common.emit(_run_sync_worker(spec))
    if spec["client"].endswith("-uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            _common.emit(_common.import_error(exc))
        # asyncio.run(..., loop_factory=uvloop.new_event_loop) on Python >= 3.12.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            _common.emit(runner.run(_run_worker(spec)))
    _common.emit(asyncio.run(_run_worker(spec)))


# --------------------------------------------------------------------------- report


def build_report(data: dict) -> tuple[str, list[str], list[str]]:
    """Markdown table, ratio lines and footnotes from the results dict."""
    cfg = data["config"]
    cells = {(r["client"], r["concurrency"]): r for r in data["results"]}
    notes: list[str] = []
    rows = [
        f"| c | client | req/s | vs {CLIENTS[REFERENCE]} | CPU ms / 1k req | peak RSS MiB "
        "| conns opened (warm-up + measured) | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]

    def rate(name: str, c: int) -> float | None:
        return ((cells.get((name, c)) or {}).get("best") or {}).get("req_per_s")

    for c in cfg["concurrency"]:
        for name in cfg["clients"]:
            label = CLIENTS[name]
            if name.startswith("exclient"):
                label = f"**{label}**"
            if name == REFERENCE:
                label += " (reference)"
            cell = cells.get((name, c)) or {}
            r = cell.get("best") or {}
            if "req_per_s" not in r:
                rows.append(f"| {c:,} | {label} | n/a | | | | | {_common.why_not_run(cell, r)} |")
                continue
            mark = ""
            if r["stopped_early"]:
                notes.append(
                    f"{CLIENTS[name]} at c={c:,} hit the {cfg['max_seconds']:g} s budget: "
                    f"{r['completed']:,} of {cfg['requests']:,} requests done; rate over those."
                )
                mark = f" [^{len(notes)}]"
            err = f"{r['errors']:,}"
            if r["error_kinds"]:
                err += " (" + ", ".join(f"{k}: {v:,}" for k, v in r["error_kinds"].items()) + ")"
            ratio = (
                "1.00x (ref)"
                if name == REFERENCE
                else fmt_ratio(r["req_per_s"], rate(REFERENCE, c))
            )
            rows.append(
                f"| {c:,} | {label} | {fmt_int(r['req_per_s'])}{mark} | {ratio} | "
                f"{fmt_int(r['cpu_ms_per_1k'])} | {_rss(r)} | "
                f"{r['warmup']['conns_opened']:,} + {r['conns_opened']:,} | {err} |"
            )

    ratios: list[str] = []
    cs = cfg["concurrency"]
    pairs = [
        ("exclient", "httpx"),
        ("exclient-httpx2", "httpx2"),
        ("exclient-httpx2", "exclient"),
        ("exclient", "aiohttp"),
        ("exclient-uvloop", "aiohttp-uvloop"),
        ("exclient", "raw"),
        ("exclient-uvloop", "raw-uvloop"),
        ("exsyncclient", "requests"),
        ("exsyncclient", "httpx-sync"),
    ]
    for ours, other in pairs:
        if ours in cfg["clients"] and other in cfg["clients"]:
            parts = ", ".join(f"c={c:,}: {fmt_ratio(rate(ours, c), rate(other, c))}" for c in cs)
            ratios.append(f"- {CLIENTS[ours]} / {CLIENTS[other]} req/s — {parts}")
    # The best-of-N ratios above beside the medians and spread that the targets are
    # judged on: ExClient against aiohttp on both loops, and the sync clients.
    for ours, other in [
        ("exclient", "aiohttp"),
        ("exclient-uvloop", "aiohttp-uvloop"),
        ("exsyncclient", "requests"),
    ]:
        if ours in cfg["clients"] and other in cfg["clients"]:
            ratios.append(
                _common.spread_line(
                    f"{CLIENTS[ours]} / {CLIENTS[other]}",
                    [
                        (
                            f"c={c:,}",
                            (cells.get((ours, c)) or {}).get("runs") or [],
                            (cells.get((other, c)) or {}).get("runs") or [],
                        )
                        for c in cs
                    ],
                )
            )
    if 100 in cs and 1000 in cs:
        for name in cfg["clients"]:
            hi, lo = rate(name, 1000), rate(name, 100)
            pct = f"{100 * hi / lo:.0f}%" if hi and lo else "n/a"
            who = f"**{CLIENTS[name]}**" if name.startswith("exclient") else CLIENTS[name]
            ratios.append(f"- {who} rate at c=1,000 as % of its own c=100 rate: {pct}")
    return "\n".join(rows), ratios, notes


def _rss(r: dict) -> str:
    rss = r.get("peak_rss_mib")  # absent in results from before it was measured
    return "n/a" if rss is None else f"{rss:.0f}"


def render_markdown(data: dict) -> str:
    cfg = data["config"]
    table, ratios, notes = build_report(data)
    path, body = BODIES[cfg.get("body", "ok")]  # results from before --body: "ok"
    lines = [
        _common.facts_line(data, servers=f"nginx {data['server']['nginx']}"),
        "",
        f"`GET {path}` → 200 with a {len(body):,}-byte body, "
        f"{cfg['requests']:,} requests per run "
        f"after {cfg['warmup']:,} warm-up requests, "
        f"`max_connections={MAX_CONNECTIONS}`, best of {cfg['repeat']} by req/s "
        f"(runs longer than {cfg['max_seconds'] / 3:g} s ran once), "
        f"{cfg['max_seconds']:g} s budget per run. "
        "c = worker coroutines sharing one client. "
        "uvloop rows run the same client on uvloop's event loop; the raw asyncio rows are a "
        "hand-written keep-alive GET on asyncio streams (no pool logic, no response object): "
        "the practical limit of a client on that loop. "
        f"The (threads) rows are sync clients: min(c, {SYNC_THREADS_MAX}) threads sharing "
        "one client (requests: one blocking pool of the same size). "
        "Peak RSS = the run's interpreter (import, client, run). "
        "CPU = client process user+sys over the measured part. "
        "Connections = TCP connections nginx accepted from the client (stub_status).",
        "",
        table,
        "",
        *ratios,
        *_common.tail_lines(data, "best", "nginx worker CPU during the measured parts:", notes),
    ]
    return "\n".join(lines)


INTRO = """\
## Plain GET (`bench/plain.py`)

ExClient against `httpx.AsyncClient` (the reference it replaces) and
`aiohttp.ClientSession`, on asyncio's default loop and on uvloop, beside a hand-written raw
asyncio client (the practical limit), and the sync clients (ExSyncClient, `httpx.Client`,
`requests.Session`) from threads, all sending `GET /4k` (a 4,096-byte body; `--body ok`
for 2 bytes) to a private nginx on 127.0.0.1 (one worker, keep-alive never expires during a
run).

How to run this suite alone, from the repository root:

```sh
bench/run --only plain          # this suite and its chart (bench/run-plain does the same)
bench/run --only plain --quick  # smoke run (~20 s); writes nothing tracked
.venv/bin/python bench/plain.py --requests 2000 --clients httpx,aiohttp --concurrency 1,100
.venv/bin/python bench/plain.py --repeat 1      # one pass instead of best of 3
```

nginx is needed; if it is missing the script installs it with `apt-get`
(as root). It runs from a temporary directory with its own config and is
stopped at exit; `python bench/_common.py serve` starts the same server by
hand. Each (client, concurrency) run is its own interpreter; clients are
interleaved per concurrency so machine noise hits them alike. A full run
rewrites `bench/results/plain.json` (raw numbers, machine facts) and this
section; `bench/run` then redraws the chart.
"""

SUITE = _common.Suite(
    "plain",
    INTRO,
    render_markdown,
    result_key="best",
    chart_title="Plain GET: req/s by concurrency",
)


# --------------------------------------------------------------------------- orchestrator


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = SUITE.parser(
        __doc__,
        CLIENTS,
        requests=(5000, "measured requests"),
        repeat_help="runs per (client, c), best req/s kept; runs longer than a third of "
        "--max-seconds are not repeated (default 3)",
        quick_help="smoke run: 300 requests, 10 s budget, no README",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="warm-up requests per run, not measured (default 200)",
    )
    p.add_argument(
        "--concurrency", default="1,10,100,1000", help="comma-separated (default 1,10,100,1000)"
    )
    p.add_argument(
        "--body",
        choices=list(BODIES),
        default="4k",
        help="what nginx answers: a 4,096-byte body (default, a small API response) or 'ok'",
    )
    args = p.parse_args(argv)
    quick = {"requests": 300, "warmup": 200, "max_seconds": 10.0, "repeat": 1}
    SUITE.settle(p, args, quick, {"clients": CLIENTS})
    try:
        args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        p.error(f"--concurrency takes whole numbers, not {args.concurrency!r}")
    return args


def _wants_another_run(cell: dict, max_seconds: float) -> bool:
    """A run that hit the budget or took over a third of it is a long sample already."""
    last = cell["runs"][-1] if cell["runs"] else {}
    return not (last.get("stopped_early") or last.get("wall_s", 0) > max_seconds / 3)


def _numbers(r: dict) -> str:
    return (
        f"{r['req_per_s']:>8,.0f} req/s {r['cpu_ms_per_1k']:>6,.0f} CPU ms/1k  "
        f"conns {r['warmup']['conns_opened']}+{r['conns_opened']}"
        f"  errors {r['errors']}  nginx {r['server_cpu_pct'] or 0:.0f}%"
    )


def measure(args: argparse.Namespace) -> int:
    server = _common.Nginx()
    cfg = {
        "requests": args.requests,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "clients": args.clients,
        "repeat": args.repeat,
        "max_seconds": args.max_seconds,
        "max_connections": MAX_CONNECTIONS,
        "event_loop": "asyncio; *-uvloop clients: uvloop",
        "body": args.body,
    }
    data = _common.new_results(
        "plain-get",
        cfg,
        {"nginx": server.version, "worker_processes": 1, "response": '200 "ok"'},
        (),
    )
    cells = {
        (n, c): {"client": n, "concurrency": c, "runs": [], "best": None}
        for c in args.concurrency
        for n in args.clients
    }

    def run_cell(cell: dict) -> dict:
        spec = {
            "client": cell["client"],
            "concurrency": cell["concurrency"],
            "requests": args.requests,
            "warmup": args.warmup,
            "warmup_seconds": min(30.0, args.max_seconds),
            "max_seconds": args.max_seconds,
            "base_url": server.base_url,
            "body": args.body,
            "server_pid": server.worker_pid,
        }
        timeout = spec["warmup_seconds"] + spec["max_seconds"] + 60
        return _common.run_worker(Path(__file__).resolve(), spec, timeout)

    def loop(skipped: dict[str, str]) -> None:
        with server:
            print(f"nginx {server.version} at {server.base_url}", file=sys.stderr, flush=True)
            for c in args.concurrency:
                _common.run_interleaved(
                    [cells[(n, c)] for n in args.clients],
                    args.repeat,
                    lambda cell: _wants_another_run(cell, args.max_seconds),
                    run_cell,
                    _numbers,
                    skipped,
                )

    return SUITE.run(args, data, cells.values(), loop)


def main(argv: list[str]) -> int:
    return SUITE.main(parse_args(argv), worker_main, measure)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
