"""Shared helpers for the benchmarks.

What ``plain.py`` and ``ntlm.py`` have in common lives here: the request loop a worker
runs (:func:`drive`), one run per fresh interpreter (:func:`run_worker`), the interleaved
best-of-N schedule (:func:`run_interleaved`), the options, results JSON and README section
of a suite (:class:`Suite`), the machine and source facts, and the table formatting.

Also here: a private nginx on loopback for the plain suite. It runs from a temporary
prefix directory with its own config (never the system one), bound to 127.0.0.1 on a
free port, one worker process, keep-alive connections that are never closed by the
server during a run, no access log. ``location /`` answers ``200 "ok"``, ``/4k`` a
4,096-byte body (``BODY_4K``), and
``/nginx_status`` is ``stub_status``, whose ``accepts`` counter tells how many TCP
connections clients opened.

Run ``python bench/_common.py serve`` to start the same server by hand (it
prints its URL and stays up until Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime as _dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
README = HERE / "README.md"
CHARTS = ROOT / "docs" / "img"  # bench-<suite>.png, drawn by bench/charts.py
EXIT_IMPORT_FAILED = 3
#: What nginx answers at ``/4k``: a typical small API response, where the 2-byte ``ok``
#: measures little more than the request and response heads.
BODY_4K = ("0123456789abcdef" * 256).encode()

NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 16384;
    multi_accept on;
}}

http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server_tokens off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    server {{
        listen 127.0.0.1:{port} backlog=4096;

        location = /nginx_status {{
            stub_status;
        }}

        location = /4k {{
            default_type text/plain;
            alias {prefix}/4k.txt;
        }}

        location / {{
            default_type text/plain;
            return 200 "ok";
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_nginx() -> str:
    """Return the nginx binary, installing it with apt-get if it is missing."""
    binary = find_nginx()
    if binary is None:
        if os.name != "posix" or shutil.which("apt-get") is None:
            sys.exit("nginx not found and apt-get is not available: install nginx first")
        sudo: list[str] = []
        if os.geteuid() != 0:
            if shutil.which("sudo") is None:
                sys.exit("nginx not found; install it (apt-get install nginx-light) or run as root")
            sudo = ["sudo", "-n"]
        print("nginx not found: installing it with apt-get ...", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        for package in ("nginx-light", "nginx"):
            done = subprocess.run(
                [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                env=env,
            )
            if done.returncode == 0 and find_nginx():
                break
        binary = find_nginx()
        if binary is None:
            sys.exit("could not install nginx with apt-get")
        # A Debian install may start the system nginx on port 80; it is not used here.
    info = nginx_build_info(binary)
    if "--with-http_stub_status_module" not in info:
        sys.exit(f"{binary} lacks the stub_status module (needed to count connections)")
    return binary


def nginx_build_info(binary: str) -> str:
    done = subprocess.run([binary, "-V"], capture_output=True, text=True)
    return done.stdout + done.stderr


def nginx_version(binary: str) -> str:
    match = re.search(r"nginx/(\S+)", nginx_build_info(binary))
    return match.group(1) if match else "unknown"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Status:
    active: int
    accepts: int
    handled: int
    requests: int


def read_status(base_url: str, timeout: float = 5.0) -> Status:
    """Read stub_status on a fresh connection (``Connection: close``).

    Every read opens one connection itself, so it counts once in ``accepts``
    and once in ``requests``; see :func:`opened_between`.
    """
    req = urllib.request.Request(base_url + "/nginx_status", headers={"Connection": "close"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    active = int(re.search(r"Active connections:\s*(\d+)", text).group(1))
    accepts, handled, requests = map(int, re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", text).groups())
    return Status(active, accepts, handled, requests)


def opened_between(before: Status, after: Status) -> tuple[int, int]:
    """Connections accepted and requests served between two reads, not
    counting the connection and request of the later read itself."""
    return after.accepts - before.accepts - 1, after.requests - before.requests - 1


def cpu_seconds_of(pid: int | None) -> float | None:
    """user+sys CPU seconds of another process (Linux /proc), or None."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, ValueError, IndexError):
        return None


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM *proc* and wait for it; SIGKILL it after *timeout* seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Nginx:
    """A private nginx on 127.0.0.1; use as a context manager."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or ensure_nginx()
        self.version = nginx_version(self.binary)
        self.prefix: str | None = None
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.base_url = ""
        self.worker_pid: int | None = None

    def start(self, attempts: int = 5) -> Nginx:
        self.prefix = tempfile.mkdtemp(prefix="bench-nginx-")
        os.chmod(self.prefix, 0o755)
        atexit.register(self.stop)
        last_error = ""
        for _ in range(attempts):
            self.port = free_port()
            conf = Path(self.prefix, "nginx.conf")
            conf.write_text(NGINX_CONF.format(prefix=self.prefix, port=self.port))
            Path(self.prefix, "4k.txt").write_bytes(BODY_4K)
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    self.prefix + "/",
                    "-e",
                    self.prefix + "/error.log",
                    "-c",
                    str(conf),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal is handled by us, not nginx
            )
            self.base_url = f"http://127.0.0.1:{self.port}"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    read_status(self.base_url, timeout=1)
                    self.worker_pid = self._find_worker_pid()
                    return self
                except OSError:
                    time.sleep(0.05)
            last_error = self.error_log_tail()
            self._kill()
        self.stop()
        raise RuntimeError(f"nginx did not start:\n{last_error}")

    def _find_worker_pid(self) -> int | None:
        if self.proc is None:
            return None
        try:
            children = (
                Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            )
            return int(children[0]) if children else None
        except (OSError, ValueError):
            return None

    def error_log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.prefix, "error.log").read_text().splitlines()[-lines:])
        except (OSError, TypeError):
            return ""

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)  # SIGTERM: nginx's fast shutdown

    def stop(self) -> None:
        self._kill()
        prefix, self.prefix = self.prefix, None
        if prefix and os.path.isdir(prefix):
            shutil.rmtree(prefix, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts(extra_packages: tuple[str, ...] = ()) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    packages = (
        "httpx-extensions",
        "httpx",
        "httpcore",
        "h11",
        "anyio",
        "sniffio",
        "aiohttp",
        *extra_packages,
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model(),
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": {name: package_version(name) for name in packages},
    }


def replace_section(path: Path, name: str, body: str, title: str = "# Benchmarks\n") -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->``
    in *path*, appending the section if the markers are missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else title
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def source_facts() -> dict:
    """Commit of the checkout and whether src/ differs from it (read-only git calls)."""

    def git(*cmd: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_modified": None if status is None else bool(status),
    }


def new_results(benchmark: str, config: dict, server: dict, packages: tuple[str, ...]) -> dict:
    """The results dict of a run about to start; ``results`` is filled in by :meth:`Suite.run`."""
    return {
        "benchmark": benchmark,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": config,
        "machine": machine_facts(packages),
        "server": server,
        "source": source_facts(),
        "results": [],
    }


def facts_line(data: dict, servers: str = "") -> str:
    """``Last full run: <date> — <machine>, <versions>; source <commit>. Total …`` for a README."""
    m = data["machine"]
    versions = [f"Python {m['python']}", *([servers] if servers else [])]
    versions += [f"{k} {v}" for k, v in m["packages"].items() if v]
    text = f"Last full run: {data['generated']} — {m['cpu_count']} CPUs ({m['cpu_model']}), "
    text += ", ".join(versions)
    src = data.get("source")
    if src:
        text += f"; source {src.get('commit') or '?'}"
        text += " with local changes in src/" if src.get("src_modified") else ""
    text += "."
    if data.get("total_seconds") is not None:
        text += f" Total {data['total_seconds'] / 60:.1f} min"
        load = m.get("loadavg_at_start")
        text += ", load average at start " + ", ".join(f"{x:g}" for x in load) if load else ""
        text += "."
    return text


# --------------------------------------------------------------------------- worker side


async def drive(
    get: Callable[[str], Awaitable[str | None]],
    url: str,
    total: int,
    concurrency: int,
    budget: float,
) -> dict:
    """*concurrency* worker coroutines share one counter of *total* requests; a hard stop
    after *budget* seconds cancels the requests still in flight.

    ``get(url)`` returns None for a success, else a short kind of failure (``"HTTP 401"``);
    an exception counts as a failure of its type's name.
    """
    remaining = total
    ok = failed = 0
    kinds: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal remaining, ok, failed
        while remaining > 0:
            remaining -= 1
            try:
                bad = await get(url)
            except Exception as exc:
                bad = type(exc).__name__
            if bad is None:
                ok += 1
            else:
                failed += 1
                kinds[bad] += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=budget)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            kinds["worker crashed: " + type(task.exception()).__name__] += 1
    return {"ok": ok, "failed": failed, "kinds": dict(kinds), "stopped_early": bool(pending)}


def drive_threads(
    get: Callable[[str], str | None],
    url: str,
    total: int,
    threads: int,
    budget: float,
) -> dict:
    """:func:`drive` for a sync client: *threads* threads share one counter of *total*
    requests; none starts a request after *budget* seconds (a request under way finishes)."""
    lock = threading.Lock()
    remaining = total
    ok = failed = 0
    kinds: Counter[str] = Counter()
    deadline = time.monotonic() + budget
    late = False

    def worker() -> None:
        nonlocal remaining, ok, failed, late
        while True:
            with lock:
                if remaining <= 0:
                    return
                if time.monotonic() > deadline:
                    late = True
                    return
                remaining -= 1
            try:
                bad = get(url)
            except Exception as exc:
                bad = type(exc).__name__
            with lock:
                if bad is None:
                    ok += 1
                else:
                    failed += 1
                    kinds[bad] += 1

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 30)
    if any(t.is_alive() for t in pool):
        late = True
        kinds["worker still running at the end"] += 1
    return {"ok": ok, "failed": failed, "kinds": dict(kinds), "stopped_early": late}


@contextmanager
def measured() -> Iterator[dict]:
    """Wall seconds and this process's CPU seconds over the with-block, in the dict it yields
    (``wall_s``, ``cpu_user_s``, ``cpu_sys_s``, ``cpu_s``; filled in when the block ends)."""
    out: dict = {}
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    yield out
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    user, sys_ = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
    out.update(wall_s=wall, cpu_user_s=user, cpu_sys_s=sys_, cpu_s=user + sys_)


def rates(res: dict, m: dict, per_1k: str) -> dict:
    """A run's wall time, requests done, successful req/s, client CPU % of one core and
    client CPU ms per 1,000 requests (under the key *per_1k*), from :func:`drive`'s
    counts and :func:`measured`'s times."""
    wall, cpu, done = m["wall_s"], m["cpu_s"], res["ok"] + res["failed"]
    return {
        "wall_s": wall,
        "completed": done,
        "req_per_s": res["ok"] / wall if wall > 0 else 0.0,
        per_1k: cpu * 1e6 / done if done else None,
        "client_cpu_pct": 100 * cpu / wall if wall > 0 else None,
        # Each run is a fresh interpreter: its peak is this run's (KiB on Linux).
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def import_error(exc: ImportError) -> dict:
    return {"import_error": f"{type(exc).__name__}: {exc}"}


def emit(result: dict) -> None:
    """Hand a worker's result to the orchestrator: one JSON line, then exit."""
    print(json.dumps(result), flush=True)
    sys.exit(EXIT_IMPORT_FAILED if "import_error" in result else 0)


# --------------------------------------------------------------------------- orchestrator side


def run_worker(script: Path, spec: dict, timeout: float) -> dict:
    """Run ``script --worker SPEC`` in a fresh interpreter and return the JSON of its last
    stdout line, or ``{"run_failed": why}``."""
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"run_failed": f"run did not finish within {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"run_failed": f"worker exited {proc.returncode}: {tail}"}


def run_interleaved(
    cells: list[dict],
    repeat: int,
    wants_another_run: Callable[[dict], bool],
    run_cell: Callable[[dict], dict],
    numbers: Callable[[dict], str],
    skipped: dict[str, str],
) -> None:
    """Up to *repeat* rounds over *cells* (one per client, same conditions), so that machine
    noise hits the clients alike. Each run is appended to its cell's ``runs`` and shown on
    stderr: the cell's conditions (its keys other than the client's), client, *numbers(run)*.
    A client that cannot be imported is put in *skipped* and not run again."""
    shown = ("mode", "row", "concurrency")
    for rep in range(repeat):
        for cell in cells:
            name = cell["client"]
            if name in skipped or not wants_another_run(cell):
                continue
            r = run_cell(cell)
            cell["runs"].append(r)
            where = " ".join(f"{k}={cell[k]!s:<5}" for k in shown if k in cell)
            where = f"  {where} {name:<14}"
            if "import_error" in r:
                skipped[name] = f"not importable: {r['import_error']}"
                print(f"{where} skipped ({r['import_error']})", file=sys.stderr, flush=True)
            elif "req_per_s" not in r:
                print(f"{where} FAILED: {r.get('run_failed')}", file=sys.stderr, flush=True)
            else:
                flag = " (stopped at budget)" if r["stopped_early"] else ""
                print(f"{where} #{rep + 1} {numbers(r)}{flag}", file=sys.stderr, flush=True)


def best_run(runs: list[dict]) -> dict | None:
    """The run with the best successful req/s, else the last (failed) one."""
    good = [r for r in runs if "req_per_s" in r]
    if good:
        return max(good, key=lambda r: r["req_per_s"])
    return runs[-1] if runs else None


# --------------------------------------------------------------------------- reports


def median_rate(runs: list[dict]) -> float | None:
    """The median successful req/s over a cell's runs (the middle of three), or None."""
    rates = sorted(r["req_per_s"] for r in runs if "req_per_s" in r)
    if not rates:
        return None
    mid = len(rates) // 2
    return rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2


def spread_line(label: str, cells: list[tuple[str, list[dict], list[dict]]]) -> str:
    """``label: where: ratio of medians (ours slowest-fastest / theirs slowest-fastest)`` for
    cells of ``(where, our runs, their runs)``: the figure that one lucky run does not move."""
    parts = []
    for where, ours, theirs in cells:
        a, b = median_rate(ours), median_rate(theirs)
        if a is None or b is None:
            parts.append(f"{where}: n/a")
            continue
        ra = [r["req_per_s"] for r in ours if "req_per_s" in r]
        rb = [r["req_per_s"] for r in theirs if "req_per_s" in r]
        parts.append(
            f"{where}: {fmt_ratio(a, b)} ({fmt_int(min(ra))}-{fmt_int(max(ra))} / "
            f"{fmt_int(min(rb))}-{fmt_int(max(rb))})"
        )
    return f"- {label}, median of each cell's runs (slowest-fastest run, ours / theirs) — " + (
        ", ".join(parts)
    )


def fmt_int(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    if b == 0:
        return "∞" if a else "n/a"
    return f"{a / b:.2f}x"


def why_not_run(cell: dict, run: dict) -> str:
    """First line of why a cell has no rate, for a table."""
    why = cell.get("skipped") or run.get("run_failed") or run.get("import_error") or "not run"
    return why.splitlines()[0][:80]


def tail_lines(data: dict, key: str, server: str, notes: list[str], why: str = "") -> list[str]:
    """Under a suite's tables: the server's highest CPU over the cells' runs (kept under
    *key*), as ``<server> at most N% of one core<why>.``, then the footnotes."""
    cpu = [
        cell[key]["server_cpu_pct"]
        for cell in data["results"]
        if (cell.get(key) or {}).get("server_cpu_pct") is not None
    ]
    lines: list[str] = []
    if cpu:
        lines += ["", f"{server} at most {max(cpu):.0f}% of one core{why}."]
    if notes:
        lines += ["", *(f"[^{i}]: {n}" for i, n in enumerate(notes, 1))]
    return lines


@dataclass(frozen=True)
class Suite:
    """What ``plain.py`` and ``ntlm.py`` share around their own measuring: the common
    options, the run (interrupt handling, best runs, results JSON) and the README section."""

    name: str  # README section <!-- name:start -->, results/<name>.json, bench-<name>.png
    intro: str  # README text above the numbers, inside the section
    render: Callable[[dict], str]  # the numbers as markdown, from a results dict
    result_key: str  # where each cell keeps the run it reports
    chart_title: str  # alt text of the chart in the README

    @property
    def results_json(self) -> Path:
        return RESULTS / f"{self.name}.json"

    def parser(
        self,
        doc: str,
        clients: Iterable[str],
        requests: tuple[int, str],
        repeat_help: str,
        quick_help: str,
    ) -> argparse.ArgumentParser:
        """An option parser with the options both suites have; *requests* is the default
        number of requests per run and what they are."""
        p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
        p.add_argument(
            "--requests",
            type=int,
            default=requests[0],
            help=f"{requests[1]} per run (default {requests[0]})",
        )
        p.add_argument("--repeat", type=int, default=3, help=repeat_help)
        names = ",".join(clients)
        p.add_argument("--clients", default=names, help=f"comma-separated subset of {names}")
        p.add_argument(
            "--max-seconds", type=float, default=60, help="time budget per run (default 60)"
        )
        p.add_argument("--quick", action="store_true", help=quick_help)
        p.add_argument(
            "--out", type=Path, help=f"results JSON (default bench/results/{self.name}.json)"
        )
        p.add_argument(
            "--no-readme",
            action="store_true",
            help="do not rewrite the README section, nor (without --out) the tracked results: "
            f"they go to bench/results/{self.name}.raw.json, which git ignores",
        )
        p.add_argument(
            "--render",
            action="store_true",
            help="measure nothing: rewrite the README section from the results JSON (--out)",
        )
        p.add_argument(
            "--check-args", action="store_true", help="check the options and exit (bench/run)"
        )
        p.add_argument("--worker", help=argparse.SUPPRESS)
        return p

    def settle(
        self,
        p: argparse.ArgumentParser,
        args: argparse.Namespace,
        quick: dict,
        choices: dict[str, Iterable[str]],
    ) -> argparse.Namespace:
        """Apply ``--quick`` (the *quick* settings, an untracked results file, no README) and
        split the comma-separated options named in *choices*, refusing unknown values."""
        if args.quick:
            for key, value in quick.items():
                setattr(args, key, value)
            args.out = args.out or RESULTS / f"{self.name}.quick.raw.json"
            args.no_readme = True
        if args.no_readme and args.out is None and not args.render:
            args.out = RESULTS / f"{self.name}.raw.json"  # a trial run leaves the tracked file
        args.out = args.out or self.results_json
        for attr, allowed in choices.items():
            got = [x.strip().lower() for x in getattr(args, attr).split(",") if x.strip()]
            bad = [x for x in got if x not in allowed]
            if bad:
                p.error(f"unknown {attr} {bad}; choose from {list(allowed)}")
            setattr(args, attr, got)
        return args

    def main(
        self,
        args: argparse.Namespace,
        worker: Callable[[dict], None],
        measure: Callable[[argparse.Namespace], int],
    ) -> int:
        if args.worker:
            worker(json.loads(args.worker))
            return 0
        if args.check_args:
            return 0
        if args.render:
            try:
                data = json.loads(args.out.read_text())
            except (OSError, ValueError) as exc:
                sys.exit(f"{args.out}: cannot read the results ({exc})")
            return self.report(data, args, wrote=[])
        return measure(args)

    def run(
        self,
        args: argparse.Namespace,
        data: dict,
        cells: Iterable[dict],
        loop: Callable[[dict[str, str]], None],
    ) -> int:
        """Measure (*loop* fills the cells' runs, putting clients it could not import in the
        dict it is given), keep each cell's best run, write the results and the README."""
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so servers are stopped at exit
        skipped: dict[str, str] = {}
        started = time.monotonic()
        interrupted = False
        try:
            loop(skipped)
        except KeyboardInterrupt:
            interrupted = True
            print("interrupted: reporting what was measured", file=sys.stderr)
            args.no_readme = True
            args.out = args.out.with_name(args.out.stem + ".partial.raw.json")
        for cell in cells:
            cell[self.result_key] = best_run(cell["runs"])
            if cell["client"] in skipped:
                cell["skipped"] = skipped[cell["client"]]
            data["results"].append(cell)
        data["total_seconds"] = round(time.monotonic() - started, 1)
        data["interrupted"] = interrupted
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=2) + "\n")
        return self.report(data, args, wrote=[args.out])

    def section(self, data: dict) -> str:
        chart = os.path.relpath(CHARTS / f"bench-{self.name}.png", README.parent)
        return f"{self.intro}\n![{self.chart_title}]({chart})\n\n{self.render(data)}"

    def report(self, data: dict, args: argparse.Namespace, wrote: list[Path]) -> int:
        if not args.no_readme:
            replace_section(README, self.name, self.section(data))
            wrote.append(README)
        print()
        print(self.render(data))
        if wrote:
            print("\nwrote " + " and ".join(map(os.path.relpath, wrote)), file=sys.stderr)
        return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: python bench/_common.py serve")
    with Nginx() as server:
        print(
            f"nginx {server.version} at {server.base_url}  "
            f"(status: {server.base_url}/nginx_status); Ctrl-C stops it"
        )
        try:
            while server.proc and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
