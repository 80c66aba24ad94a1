#!/usr/bin/env python3
"""Plain-GET benchmark: ExClient vs httpx.AsyncClient vs aiohttp.ClientSession.

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
    .venv/bin/python bench/plain.py --requests 2000 --clients httpx,aiohttp --concurrency 1,100
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

CLIENTS = {
    "exclient": "ExClient",
    "httpx": "httpx.AsyncClient",
    "aiohttp": "aiohttp.ClientSession",
}
REFERENCE = "httpx"  # the client ExClient replaces; ratios are against it (and aiohttp)
MAX_CONNECTIONS = 100
RESULTS_JSON = HERE / "results" / "plain.json"
README = HERE / "README.md"
EXIT_IMPORT_FAILED = 3


# --------------------------------------------------------------------------- worker


def _make_client(name: str):
    """Return (async context manager client, async fn doing one request -> ok)."""
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS))

        async def get(url: str) -> bool:
            async with session.get(url) as resp:
                body = await resp.read()
                return resp.status == 200 and body == b"ok"

        return session, get

    import httpx

    if name == "httpx":
        cls = httpx.AsyncClient
    elif name == "exclient":
        from httpx_extensions import ExClient as cls
    else:
        raise ValueError(name)
    client = cls(limits=httpx.Limits(max_connections=MAX_CONNECTIONS))

    async def get(url: str) -> bool:
        resp = await client.get(url)  # not streaming: the body is read in full
        return resp.status_code == 200 and resp.content == b"ok"

    return client, get


async def _drive(get, url: str, total: int, concurrency: int, budget: float) -> dict:
    """C workers share one counter of N requests; hard stop after *budget* s."""
    remaining = total
    ok = errors = 0
    kinds: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal remaining, ok, errors
        while remaining > 0:
            remaining -= 1
            try:
                good = await get(url)
            except Exception as exc:
                good = False
                kinds[type(exc).__name__] += 1
            else:
                if not good:
                    kinds["bad response"] += 1
            if good:
                ok += 1
            else:
                errors += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=budget)
    stopped = bool(pending)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            kinds["worker crashed: " + type(task.exception()).__name__] += 1
    return {"ok": ok, "errors": errors, "error_kinds": dict(kinds), "stopped_early": stopped}


async def _run_worker(spec: dict) -> dict:
    base = spec["base_url"]
    url = base + "/"
    try:
        client, get = _make_client(spec["client"])
    except ImportError as exc:
        return {"import_error": f"{type(exc).__name__}: {exc}"}
    out: dict = {}
    try:
        s0 = _common.read_status(base)
        warm = await _drive(get, url, spec["warmup"], spec["concurrency"], spec["warmup_seconds"])
        s1 = _common.read_status(base)

        srv0 = _common.cpu_seconds_of(spec.get("server_pid"))
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        res = await _drive(get, url, spec["requests"], spec["concurrency"], spec["max_seconds"])
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        srv1 = _common.cpu_seconds_of(spec.get("server_pid"))

        s2 = _common.read_status(base)
    finally:
        closer = client.close() if spec["client"] == "aiohttp" else client.aclose()
        try:
            await asyncio.wait_for(closer, timeout=10)
        except Exception as exc:
            out["close_error"] = f"{type(exc).__name__}: {exc}"

    warm_conns, _ = _common.opened_between(s0, s1)
    conns, served = _common.opened_between(s1, s2)
    user, sys_ = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
    done = res["ok"] + res["errors"]
    out.update(
        {
            "wall_s": wall,
            "completed": done,
            "ok": res["ok"],
            "errors": res["errors"],
            "error_kinds": res["error_kinds"],
            "stopped_early": res["stopped_early"],
            "req_per_s": res["ok"] / wall if wall > 0 else 0.0,
            "cpu_user_s": user,
            "cpu_sys_s": sys_,
            "cpu_ms_per_1k": (user + sys_) * 1e6 / done if done else None,
            "client_cpu_pct": 100 * (user + sys_) / wall if wall > 0 else None,
            "server_cpu_pct": 100 * (srv1 - srv0) / wall
            if srv0 is not None and srv1 is not None
            else None,
            "conns_opened": conns,
            "server_requests": served,
            "warmup": {
                "requests": spec["warmup"],
                "ok": warm["ok"],
                "errors": warm["errors"],
                "error_kinds": warm["error_kinds"],
                "stopped_early": warm["stopped_early"],
                "conns_opened": warm_conns,
            },
        }
    )
    return out


def worker_main(spec: dict) -> None:
    result = asyncio.run(_run_worker(spec))
    print(json.dumps(result), flush=True)
    sys.exit(EXIT_IMPORT_FAILED if "import_error" in result else 0)


# --------------------------------------------------------------------------- orchestrator


def run_one(spec: dict) -> dict:
    timeout = spec["warmup_seconds"] + spec["max_seconds"] + 60
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"failed": f"run did not finish within {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"failed": f"worker exited {proc.returncode}: {tail}"}


def fmt_int(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def build_report(data: dict) -> tuple[str, list[str], list[str]]:
    """Markdown table, ratio lines and footnotes from the results dict."""
    cfg = data["config"]
    best = {(r["client"], r["concurrency"]): r.get("best") for r in data["results"]}
    skipped = {r["client"]: r.get("skipped") for r in data["results"] if r.get("skipped")}
    notes: list[str] = []
    rows = [
        f"| c | client | req/s | vs {CLIENTS[REFERENCE]} | CPU ms / 1k req "
        "| conns opened (warm-up + measured) | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in cfg["concurrency"]:
        ref = best.get((REFERENCE, c)) or {}
        for name in cfg["clients"]:
            label = CLIENTS[name]
            if name == "exclient":
                label = f"**{label}**"
            if name == REFERENCE:
                label += " (reference)"
            r = best.get((name, c))
            if not r or "req_per_s" not in r:
                why = (
                    skipped.get(name)
                    or (r or {}).get("failed")
                    or (r or {}).get("import_error")
                    or "not run"
                )
                rows.append(f"| {c:,} | {label} | n/a | | | | {why.splitlines()[0][:80]} |")
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
                else fmt_ratio(r["req_per_s"], ref.get("req_per_s"))
            )
            rows.append(
                f"| {c:,} | {label} | {fmt_int(r['req_per_s'])}{mark} | {ratio} | "
                f"{fmt_int(r['cpu_ms_per_1k'])} | "
                f"{r['warmup']['conns_opened']:,} + {r['conns_opened']:,} | {err} |"
            )

    def rate(name: str, c: int) -> float | None:
        r = best.get((name, c)) or {}
        return r.get("req_per_s")

    ratios: list[str] = []
    cs = cfg["concurrency"]
    if "exclient" in cfg["clients"]:
        for other in ("httpx", "aiohttp"):
            if other in cfg["clients"]:
                parts = ", ".join(
                    f"c={c:,}: {fmt_ratio(rate('exclient', c), rate(other, c))}" for c in cs
                )
                ratios.append(f"- ExClient / {CLIENTS[other]} req/s — {parts}")
    if 100 in cs and 1000 in cs:
        for name in cfg["clients"]:
            hi, lo = rate(name, 1000), rate(name, 100)
            pct = f"{100 * hi / lo:.0f}%" if hi and lo else "n/a"
            who = "**ExClient**" if name == "exclient" else CLIENTS[name]
            ratios.append(f"- {who} rate at c=1,000 as % of its own c=100 rate: {pct}")
    return "\n".join(rows), ratios, notes


def render_markdown(data: dict) -> str:
    cfg, m = data["config"], data["machine"]
    table, ratios, notes = build_report(data)
    pk = m["packages"]
    srv = [
        r["best"]["server_cpu_pct"]
        for r in data["results"]
        if r.get("best") and r["best"].get("server_cpu_pct") is not None
    ]
    lines = [
        f"Last full run: {data['generated']} — {m['cpu_count']} CPUs ({m['cpu_model']}), "
        f"Python {m['python']}, nginx {data['server']['nginx']}, "
        + ", ".join(f"{k} {v}" for k, v in pk.items() if v)
        + ".",
        "",
        f"`GET /` → `200 ok`, {cfg['requests']:,} requests per run "
        f"after {cfg['warmup']:,} warm-up requests, "
        f"`max_connections={MAX_CONNECTIONS}`, best of {cfg['repeat']} by req/s "
        f"(runs longer than {cfg['max_seconds'] / 3:g} s ran once), "
        f"{cfg['max_seconds']:g} s budget per run. "
        "c = worker coroutines sharing one client. "
        "CPU = client process user+sys over the measured part. "
        "Connections = TCP connections nginx accepted from the client (stub_status).",
        "",
        table,
        "",
        *ratios,
    ]
    if srv:
        lines += [
            "",
            f"nginx worker CPU during the measured parts: at most {max(srv):.0f}% of one core.",
        ]
    if notes:
        lines += ["", *(f"[^{i}]: {n}" for i, n in enumerate(notes, 1))]
    return "\n".join(lines)


README_HEAD = """\
# Benchmarks

## Plain GET (`bench/plain.py`)

ExClient against `httpx.AsyncClient` (the reference it replaces) and
`aiohttp.ClientSession`, all sending `GET /` to a private nginx on 127.0.0.1
(one worker, keep-alive never expires during a run, `return 200 "ok"`).

How to run, from the repository root:

```sh
bench/run-plain                 # makes .venv if absent, installs . + bench/requirements.txt, runs
bench/run-plain --quick         # smoke run (~20 s); writes only bench/results/plain.quick.raw.json
.venv/bin/python bench/plain.py --requests 2000 --clients httpx,aiohttp --concurrency 1,100
.venv/bin/python bench/plain.py --repeat 1      # one pass instead of best of 3
```

nginx is needed; if it is missing the script installs it with `apt-get`
(as root). It runs from a temporary directory with its own config and is
stopped at exit; `python bench/_common.py serve` starts the same server by
hand. Each (client, concurrency) run is its own interpreter; clients are
interleaved per concurrency so machine noise hits them alike. A full run
rewrites `bench/results/plain.json` (raw numbers, machine facts) and the
section below.

"""


def write_outputs(data: dict, out_json: Path, update_readme: bool) -> None:
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(data, indent=2) + "\n")
    if update_readme:
        if not README.exists():
            README.write_text(README_HEAD)
        _common.replace_section(README, "plain", render_markdown(data))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--requests", type=int, default=5000, help="measured requests per run (default 5000)"
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
        "--clients",
        default="exclient,httpx,aiohttp",
        help="comma-separated subset of exclient,httpx,aiohttp",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per (client, c), best req/s kept; runs longer than a third of "
        "--max-seconds are not repeated (default 3)",
    )
    p.add_argument(
        "--max-seconds", type=float, default=60, help="time budget per measured run (default 60)"
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 300 requests, 10 s budget, no README"
    )
    p.add_argument("--out", type=Path, help="results JSON (default bench/results/plain.json)")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the README section")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.max_seconds, args.repeat = 300, 200, 10.0, 1
        args.out = args.out or HERE / "results" / "plain.quick.raw.json"
        args.no_readme = True
    args.out = args.out or RESULTS_JSON
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    args.clients = [x.strip().lower() for x in args.clients.split(",") if x.strip()]
    bad = [c for c in args.clients if c not in CLIENTS]
    if bad:
        p.error(f"unknown client(s) {bad}; choose from {list(CLIENTS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(json.loads(args.worker))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so nginx is stopped at exit

    server = _common.Nginx().start()
    print(f"nginx {server.version} at {server.base_url} (pid {server.proc.pid})", file=sys.stderr)
    cfg = {
        "requests": args.requests,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "clients": args.clients,
        "repeat": args.repeat,
        "max_seconds": args.max_seconds,
        "max_connections": MAX_CONNECTIONS,
        "event_loop": "asyncio",
    }
    data = {
        "benchmark": "plain-get",
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": cfg,
        "machine": _common.machine_facts(),
        "server": {"nginx": server.version, "worker_processes": 1, "response": '200 "ok"'},
        "results": [],
    }
    entries = {
        (n, c): {"client": n, "concurrency": c, "runs": [], "best": None}
        for c in args.concurrency
        for n in args.clients
    }
    skipped: dict[str, str] = {}
    started = time.monotonic()
    try:
        for c in args.concurrency:
            for rep in range(args.repeat):
                for name in args.clients:
                    if name in skipped:
                        continue
                    entry = entries[(name, c)]
                    last = entry["runs"][-1] if entry["runs"] else {}
                    if last.get("stopped_early") or last.get("wall_s", 0) > args.max_seconds / 3:
                        continue  # a long run is a long sample already: not repeated
                    spec = {
                        "client": name,
                        "concurrency": c,
                        "requests": args.requests,
                        "warmup": args.warmup,
                        "warmup_seconds": min(30.0, args.max_seconds),
                        "max_seconds": args.max_seconds,
                        "base_url": server.base_url,
                        "server_pid": server.worker_pid,
                    }
                    r = run_one(spec)
                    if "import_error" in r:
                        skipped[name] = f"not importable: {r['import_error']}"
                        print(f"  {CLIENTS[name]}: skipped ({r['import_error']})", file=sys.stderr)
                        continue
                    entry["runs"].append(r)
                    if "failed" in r:
                        print(
                            f"  c={c:<5} {CLIENTS[name]:<22} FAILED: {r['failed']}", file=sys.stderr
                        )
                        continue
                    flag = " (stopped at budget)" if r["stopped_early"] else ""
                    print(
                        f"  c={c:<5} {CLIENTS[name]:<22} #{rep + 1} {r['req_per_s']:>8,.0f} req/s "
                        f"{r['cpu_ms_per_1k']:>6,.0f} CPU ms/1k  "
                        f"conns {r['warmup']['conns_opened']}+{r['conns_opened']}"
                        f"  errors {r['errors']}  nginx {r['server_cpu_pct'] or 0:.0f}%{flag}",
                        file=sys.stderr,
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("interrupted: reporting what was measured", file=sys.stderr)
        args.no_readme = True
        args.out = args.out.with_name(args.out.stem + ".partial.raw.json")
    finally:
        server.stop()

    for (name, _c), entry in entries.items():
        good = [r for r in entry["runs"] if "req_per_s" in r]
        entry["best"] = (
            max(good, key=lambda r: r["req_per_s"])
            if good
            else (entry["runs"][-1] if entry["runs"] else None)
        )
        if name in skipped:
            entry["skipped"] = skipped[name]
        data["results"].append(entry)
    data["total_seconds"] = round(time.monotonic() - started, 1)

    write_outputs(data, args.out, update_readme=not args.no_readme)
    print()
    print(render_markdown(data))
    print(
        f"\nwrote {os.path.relpath(args.out)}"
        + ("" if args.no_readme else f" and {os.path.relpath(README)}"),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
