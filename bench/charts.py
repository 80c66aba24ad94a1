#!/usr/bin/env python3
"""Charts of the benchmark results: PNGs for bench/README.md and docs/performance.md.

Reads ``bench/results/plain.json`` and ``bench/results/ntlm.json`` (as written by
``plain.py`` and ``ntlm.py``) and writes, into ``docs/img/``:

* ``bench-plain.png``: successful req/s against concurrency (log scale), one line per
  client; runs with failed requests are marked with a black X;
* ``bench-ntlm.png``: one panel per server mode, grouped bars of successful req/s per
  client at each row (c = 1, 10, 50, 50 through 10 connections); bars of runs with
  failures are hatched and labelled with the share of requests that failed.

Titles carry the machine facts and the date of the run from the JSON. The output depends
only on the JSON: a fixed size and dpi, matplotlib's default style whatever the local
matplotlibrc says, and no software version or date in the PNG metadata, so drawing again
from the same results gives the same bytes.

    .venv/bin/python bench/charts.py                   # both charts into docs/img/
    .venv/bin/python bench/charts.py --only ntlm
    .venv/bin/python bench/charts.py --plain bench/results/plain.quick.raw.json \\
        --only plain --out-dir /tmp/charts
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullLocator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
import ntlm  # noqa: E402
import plain  # noqa: E402

DPI = 100
WIDTH = 900  # px: README width
PLAIN_HEIGHT = 500  # px
PLAIN_LEGEND_COLUMNS = 3
LEGEND_ROW = 22  # px
NTLM_HEIGHT_PER_MODE = 325  # px, plus NTLM_HEIGHT_EXTRA for the title and legend
NTLM_HEIGHT_EXTRA = 150
BENCHMARKS = {"plain": "plain-get", "ntlm": "ntlm"}  # the "benchmark" field of each JSON

# Okabe-Ito colours (readable with colour blindness); one per library, same in both charts.
COLOURS = {
    "exclient": "#D55E00",
    "exclient-uvloop": "#D55E00",
    "exclient-httpx2": "#E69F00",
    "exsyncclient": "#882255",
    "aiohttp-uvloop": "#009E73",
    "raw": "#777777",
    "raw-uvloop": "#777777",
    "httpx": "#0072B2",
    "httpx-ntlm": "#0072B2",
    "httpx2": "#56B4E9",
    "aiohttp": "#009E73",
    "aiohttp-ntlm": "#009E73",
    "aiohttp-ntlm-uvloop": "#009E73",
    "requests-ntlm": "#CC79A7",
    "httpx-sync": "#0072B2",
    "requests": "#CC79A7",
}
MARKERS = {"exclient": "o", "httpx": "s", "aiohttp": "^"}
FAILED = "black"
STYLE = {
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs everywhere
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "hatch.color": FAILED,
    "legend.frameon": False,
}


class ResultsError(Exception):
    """A results file that is missing, unreadable or not of the expected benchmark."""


def load_results(path: Path, suite: str) -> dict:
    """The results dict in *path*, checked to be *suite*'s ("plain" or "ntlm")."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ResultsError(
            f"{path}: no such results file (bench/run --only {suite} writes it)"
        ) from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None
    found = data.get("benchmark") if isinstance(data, dict) else None
    if found != BENCHMARKS[suite]:
        raise ResultsError(
            f"{path}: not {suite} benchmark results "
            f'("benchmark" is {found!r}, expected {BENCHMARKS[suite]!r})'
        )
    return data


def facts(data: dict) -> str:
    """Machine, versions and date of a run, for a chart's subtitle."""
    m = data["machine"]
    version = m["packages"].get("httpx-extensions")
    parts = [f"{m['cpu_count']} CPUs ({m['cpu_model']})", f"Python {m['python']}"]
    if version:
        parts.append(f"httpx-extensions {version}")
    commit = (data.get("source") or {}).get("commit")
    if commit:
        parts.append(f"source {commit}")
    return ", ".join(parts) + f"; run {data['generated']}"


def _figure(height: int, headline: str, subtitle: str, top: int, bottom: int) -> Figure:
    """A WIDTH x *height* px figure with a bold headline and a grey subtitle above the plots,
    whose area leaves *top* and *bottom* px free (fixed margins: the same layout every time)."""
    fig = Figure(figsize=(WIDTH / DPI, height / DPI), dpi=DPI)
    fig.text(0.5, 1 - 10 / height, headline, ha="center", va="top", fontsize=11, weight="bold")
    fig.text(0.5, 1 - 31 / height, subtitle, ha="center", va="top", color="dimgray")
    fig.subplots_adjust(
        left=78 / WIDTH, right=1 - 16 / WIDTH, top=1 - top / height, bottom=bottom / height
    )
    return fig


def _thousands(value: float, _pos: object = None) -> str:
    return f"{value:,.0f}"


def draw_plain(data: dict) -> Figure:
    cfg = data["config"]
    cells = {(r["client"], r["concurrency"]): r.get("best") or {} for r in data["results"]}
    cs = cfg["concurrency"]
    # The legend wraps at PLAIN_LEGEND_COLUMNS entries a row (one more for "failed requests");
    # each row past the first takes LEGEND_ROW px from the plot, so nothing is cut at the edge.
    rows = -(-(len(cfg["clients"]) + 1) // PLAIN_LEGEND_COLUMNS)
    fig = _figure(
        PLAIN_HEIGHT + LEGEND_ROW * (rows - 1),
        f"GET {plain.BODIES[cfg.get('body', 'ok')][0]} → 200 from a local nginx: successful "
        "req/s by concurrency (higher is better)",
        f"{facts(data)}\n{cfg['requests']:,} requests per run after {cfg['warmup']:,} warm-up, "
        f"max_connections={cfg['max_connections']}, best of {cfg['repeat']}",
        top=82,
        bottom=78 + LEGEND_ROW * (rows - 1),
    )
    ax = fig.add_subplot()
    failures = False
    for name in cfg["clients"]:
        runs = [(c, cells[(name, c)]) for c in cs if "req_per_s" in cells.get((name, c), {})]
        label = plain.CLIENTS[name] + (" (reference)" if name == plain.REFERENCE else "")
        ax.plot(
            [c for c, _ in runs],
            [r["req_per_s"] for _, r in runs],
            color=COLOURS[name],
            marker=MARKERS.get(name.removesuffix("-uvloop"), "o"),
            # uvloop: the same library's colour, dashed; the raw reference: dotted.
            # The sync clients (threads): dash-dot, in their library's colour.
            linestyle=":"
            if name.startswith("raw")
            else "--"
            if name.endswith("uvloop")
            else "-."
            if name in plain.SYNC_CLIENTS
            else "-",
            linewidth=2.6 if name == "exclient" else 1.6,
            markersize=7 if name == "exclient" else 5,
            label=label,
            zorder=3 if name == "exclient" else 2,
        )
        for c, r in runs:
            if r["errors"] or r["stopped_early"]:
                failures = True
                ax.plot(c, r["req_per_s"], marker="X", color=FAILED, markersize=10, zorder=4)
    if "exclient" in cfg["clients"] and plain.REFERENCE in cfg["clients"]:
        for c in cs:
            ex = cells.get(("exclient", c), {}).get("req_per_s")
            ref = cells.get((plain.REFERENCE, c), {}).get("req_per_s")
            if ex and ref:
                ax.annotate(
                    f"{ex / ref:.1f}x {plain.REFERENCE}",
                    (c, ex),
                    xytext=(0, 9),
                    textcoords="offset points",
                    ha="center",
                    color=COLOURS["exclient"],
                    weight="bold",
                )
    ax.set_xscale("log")
    ax.set_xticks(cs, [f"{c:,}" for c in cs])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(cs) / 1.6, max(cs) * 1.6)
    ax.set_ylim(0, None)
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("concurrency: worker coroutines sharing one client (log scale)")
    ax.set_ylabel("successful requests per second (req/s)")
    handles, _ = ax.get_legend_handles_labels()
    if failures:
        handles.append(
            Line2D([], [], marker="X", color=FAILED, linestyle="", label="failed requests")
        )
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), PLAIN_LEGEND_COLUMNS))
    return fig


def draw_ntlm(data: dict) -> Figure:
    cfg = data["config"]
    modes, rows, clients = cfg["modes"], cfg["rows"], cfg["clients"]
    cells = {(r["mode"], r["row"], r["client"]): r.get("result") or {} for r in data["results"]}
    height = NTLM_HEIGHT_EXTRA + NTLM_HEIGHT_PER_MODE * len(modes)
    fig = _figure(
        height,
        "NTLM logon + GET / to an IIS-like server: successful req/s per client (higher is better)",
        f"{facts(data)}\n{cfg['requests']:,} requests per run, cold clients (handshakes "
        f"included), best of up to {cfg['repeat']}",
        top=100,
        bottom=100,
    )
    axes = fig.subplots(len(modes), 1, squeeze=False, gridspec_kw={"hspace": 0.3})[:, 0]
    width = 0.84 / len(clients)
    failures = False
    for ax, mode in zip(axes, modes, strict=True):
        top = max(
            (cells.get((mode, row, n), {}).get("req_per_s", 0) for row in rows for n in clients),
            default=0,
        )
        for i, name in enumerate(clients):
            for j, row in enumerate(rows):
                x = j + (i - (len(clients) - 1) / 2) * width
                r = cells.get((mode, row, name), {})
                if "req_per_s" not in r:
                    ax.text(x, 0, " not run", rotation=90, ha="center", va="bottom", fontsize=7)
                    continue
                failed = r["failed"] or r["stopped_early"]
                ax.bar(
                    x,
                    r["req_per_s"],
                    width * 0.92,
                    color=COLOURS[name],
                    hatch="////" if failed else None,
                    edgecolor=FAILED if failed else COLOURS[name],
                    linewidth=0.8,
                    zorder=2,
                )
                if failed:
                    failures = True
                    pct = 100 * r["failed"] / r["completed"] if r["completed"] else 100.0
                    ax.annotate(
                        f"{pct:.{0 if pct >= 10 else 1}f}%\nfailed",
                        (x, r["req_per_s"]),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        linespacing=0.9,
                    )
        ax.set_xticks(range(len(rows)), [f"c={ntlm.row_label(row)}" for row in rows])
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_ylim(0, top * 1.18 or 1)
        ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.grid(True, axis="y", alpha=0.3, zorder=0)
        ax.set_ylabel("successful req/s")
        ax.set_title(
            f"server mode {mode}: {ntlm.MODE_TITLES.get(mode, mode)}",
            loc="left",
        )
    axes[-1].set_xlabel(
        "concurrency (worker coroutines sharing one client; requests-ntlm: threads)"
    )
    handles: list = [Patch(color=COLOURS[n], label=ntlm.CLIENTS[n]) for n in clients]
    if failures:
        handles.append(
            Patch(facecolor="white", edgecolor=FAILED, hatch="////", label="some requests failed")
        )
    fig.legend(handles=handles, loc="lower center", ncol=3)
    return fig


DRAW = {"plain": draw_plain, "ntlm": draw_ntlm}


def write_chart(suite: str, results: Path, out_dir: Path) -> Path:
    """Draw *suite*'s chart from the results file *results* into ``out_dir/bench-<suite>.png``."""
    data = load_results(results, suite)
    with matplotlib.style.context(["default", STYLE]):
        try:
            fig = DRAW[suite](data)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ResultsError(
                f"{results}: not shaped like {suite} results ({type(exc).__name__}: {exc})"
            ) from None
        FigureCanvasAgg(fig)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"bench-{suite}.png"
        # No "Software" (matplotlib version) entry: the bytes depend on the results only.
        fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only", choices=list(DRAW), action="append", help="this chart only (repeatable)"
    )
    for suite in DRAW:
        p.add_argument(
            f"--{suite}",
            type=Path,
            default=_common.RESULTS / f"{suite}.json",
            help=f"{suite} results JSON (default bench/results/{suite}.json)",
        )
    p.add_argument(
        "--out-dir", type=Path, default=_common.CHARTS, help="where the PNGs go (default docs/img)"
    )
    args = p.parse_args(argv)
    for suite in args.only or list(DRAW):
        try:
            path = write_chart(suite, getattr(args, suite), args.out_dir)
        except ResultsError as exc:
            print(f"charts: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {os.path.relpath(path)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
