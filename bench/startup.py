#!/usr/bin/env python3
"""Start-up cost: import time and peak RSS of ``import httpx_extensions`` beside httpx's and
aiohttp's, and the time of ``httpx-extensions --help`` (issue 15).

Every measurement is a fresh interpreter (``python -I -c ...``), and the targets take turns
(one round runs each once, in a rotated order) so that machine noise hits them alike; each
row reports the median of the rounds (``--runs``, default 15).

- *import ms*: wall time of the statement alone, measured inside the child (interpreter
  start-up excluded).
- *peak RSS*: the child's peak resident set, the whole interpreter included; the ``python``
  row is the interpreter by itself. On Linux it is ``VmHWM`` of ``/proc/self/status``, read
  by the child at its end, because ``ru_maxrss`` (also what ``os.wait4`` reports) keeps the
  high-water mark from before ``exec``: this script's own size, copied by the fork.
  Elsewhere, the child's ``ru_maxrss``. Not measured for the command rows.
- *command ms*: wall time of the whole process, start-up included, as a shell sees it.

Two environments, from one virtualenv:

- ``installed``: whatever the venv holds. In this project's .venv that includes click and
  rich, which ``import httpx`` loads for its own command line, and trio, which httpcore
  loads when it is installed.
- ``minimal``: the child first marks httpx's and httpcore's optional packages (click, rich,
  pygments, trio, socksio, h2, brotli, zstandard) as absent, as in a venv with only
  ``pip install httpx-extensions``; httpx and httpcore handle a missing one themselves.
  The command rows need click and are left out.

    .venv/bin/python bench/startup.py            # full run: results JSON + README section
    .venv/bin/python bench/startup.py --quick    # 5 rounds, writes nothing tracked
    .venv/bin/python bench/startup.py --render   # README section again from the results
    .venv/bin/python bench/startup.py --python /other/venv/bin/python --no-readme
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

NAME = "startup"
REFERENCE = "import httpx"
TARGET_RATIO = 1.2
OPTIONAL = ("click", "rich", "pygments", "trio", "socksio", "h2", "brotli", "zstandard")

# label -> statement timed in the child
IMPORTS = {
    "python": "pass",
    "import httpx": "import httpx",
    "import httpx_extensions": "import httpx_extensions",
    # Every public name loads on first use, so the line above loads next to nothing; this is
    # what a program that uses the client pays (httpx loads httpcore only when a client is made).
    "from httpx_extensions import ExClient": "from httpx_extensions import ExClient",
    "from httpx_extensions import NTLMAuth": "from httpx_extensions import NTLMAuth",
    "import aiohttp": "import aiohttp",
    "httpx.AsyncClient()": "import httpx; httpx.AsyncClient()",
    "httpx_extensions.ExClient()": "import httpx_extensions; httpx_extensions.ExClient()",
}
# label -> console script in the venv's bin/ and its arguments
COMMANDS = {
    "httpx-extensions --help": ("httpx-extensions", "--help"),
    "httpx --help": ("httpx", "--help"),
}
ENVIRONMENTS = ("installed", "minimal")

_CHILD = """\
import sys
for _name in {absent!r}:
    sys.modules[_name] = None  # "not installed": the import raises ImportError at once
import time
_t = time.perf_counter()
{statement}
_t = time.perf_counter() - _t
try:
    with open("/proc/self/status") as _status:
        _peak = int(next(l for l in _status if l.startswith("VmHWM:")).split()[1])
except (OSError, StopIteration, ValueError):  # not Linux: ru_maxrss, KiB (bytes on macOS)
    import resource
    _peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _peak = _peak // 1024 if sys.platform == "darwin" else _peak
sys.stdout.write("%r %r\\n" % (_t * 1000.0, _peak))
"""


def _last_error(stderr: str, status: int) -> str:
    return (stderr.strip().splitlines() or [f"exit {status}"])[-1]


def measure_import(python: str, statement: str, absent: tuple[str, ...]) -> dict:
    code = _CHILD.format(absent=absent, statement=statement)
    done = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return {"error": _last_error(done.stderr, done.returncode)}
    ms, peak = done.stdout.strip().splitlines()[-1].split()
    return {"ms": float(ms), "rss_kib": int(peak)}


def measure_command(argv: list[str]) -> dict:
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    elapsed = (time.perf_counter() - started) * 1000.0
    if done.returncode != 0:
        return {"error": _last_error(done.stderr.decode(errors="replace"), done.returncode)}
    return {"ms": elapsed, "rss_kib": None}  # another process's peak is not ours to read


def _targets(python: str) -> list[dict]:
    """Every (environment, row) to measure, with how to run it once."""
    targets = []
    for env in ENVIRONMENTS:
        absent = OPTIONAL if env == "minimal" else ()
        for label, statement in IMPORTS.items():
            targets.append(
                {
                    "env": env,
                    "label": label,
                    "kind": "import",
                    "run": lambda s=statement, a=absent: measure_import(python, s, a),
                }
            )
        if env == "minimal":
            continue
        bindir = Path(python).parent
        for label, (script, *args) in COMMANDS.items():
            path = bindir / script
            if not path.exists() and shutil.which(script, path=str(bindir)) is None:
                continue
            targets.append(
                {
                    "env": env,
                    "label": label,
                    "kind": "command",
                    "run": lambda argv=[str(path), *args]: measure_command(argv),
                }
            )
    return targets


def measure(args: argparse.Namespace) -> dict:
    python = args.python
    info = subprocess.run(
        [
            python,
            "-I",
            "-c",
            "import json, platform; from importlib import metadata\n"
            "def v(n):\n"
            "    try: return metadata.version(n)\n"
            "    except metadata.PackageNotFoundError: return None\n"
            f"print(json.dumps({{'python': platform.python_version(), 'packages': "
            f"{{n: v(n) for n in {list(_PACKAGES)!r}}}}}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    child = json.loads(info.stdout)
    data = _common.new_results(
        NAME,
        {"runs": args.runs, "environments": list(ENVIRONMENTS), "absent_in_minimal": OPTIONAL},
        {},
        (),
    )
    data["machine"]["python"] = child["python"]
    data["machine"]["packages"] = child["packages"]
    targets = _targets(python)
    samples: dict[tuple[str, str], list[dict]] = {(t["env"], t["label"]): [] for t in targets}
    started = time.monotonic()
    for round_no in range(args.runs):
        shift = round_no % len(targets)
        for target in targets[shift:] + targets[:shift]:
            samples[(target["env"], target["label"])].append(target["run"]())
        print(f"round {round_no + 1}/{args.runs}", file=sys.stderr, flush=True)
    for target in targets:
        runs = samples[(target["env"], target["label"])]
        good = [r for r in runs if "error" not in r]
        row: dict = {"env": target["env"], "label": target["label"], "kind": target["kind"]}
        if good:
            row.update(
                runs=len(good),
                median_ms=round(statistics.median(r["ms"] for r in good), 1),
                min_ms=round(min(r["ms"] for r in good), 1),
                median_rss_mib=(
                    round(statistics.median(r["rss_kib"] for r in good) / 1024, 1)
                    if good[0]["rss_kib"] is not None
                    else None
                ),
            )
        else:
            row["error"] = runs[0]["error"] if runs else "not run"
        data["results"].append(row)
    data["total_seconds"] = round(time.monotonic() - started, 1)
    return data


_PACKAGES = (
    "httpx-extensions",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "pyspnego",
    "cryptography",
    "aiohttp",
    "click",
    "rich",
    "trio",
)


def _ratio(value: float | None, reference: float | None) -> str:
    if not value or not reference:
        return ""
    return f"{value / reference:.2f}x"


def render(data: dict) -> str:
    rows = data["results"]
    lines: list[str] = []
    for env in ENVIRONMENTS:
        mine = [r for r in rows if r["env"] == env]
        if not mine:
            continue
        ref = next((r for r in mine if r["label"] == REFERENCE and "median_ms" in r), None)
        lines += [
            f"**{env}**"
            + (" (httpx's and httpcore's optional packages absent)" if env == "minimal" else ""),
            "",
            "| | median ms | min ms | vs `import httpx` | peak RSS MiB | vs `import httpx` |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in mine:
            label = f"`{r['label']}`"
            if "error" in r:
                lines.append(f"| {label} | not run: {r['error']} | | | | |")
                continue
            ms_ratio = rss_ratio = ""
            if r["kind"] == "import" and ref is not None and r["label"] != "python":
                ms_ratio = _ratio(r["median_ms"], ref["median_ms"])
                rss_ratio = _ratio(r["median_rss_mib"], ref["median_rss_mib"])
            rss = "" if r["median_rss_mib"] is None else f"{r['median_rss_mib']:,.1f}"
            lines.append(
                f"| {label} | {r['median_ms']:,.1f} | {r['min_ms']:,.1f} | {ms_ratio} "
                f"| {rss} | {rss_ratio} |"
            )
        ours = next((r for r in mine if r["label"] == "import httpx_extensions"), None)
        if ref is not None and ours is not None and "median_ms" in ours:
            ratio = ours["median_ms"] / ref["median_ms"]
            verdict = "within" if ratio <= TARGET_RATIO else "over"
            lines += [
                "",
                f"`import httpx_extensions` / `import httpx`: {ratio:.2f}x "
                f"({verdict} the {TARGET_RATIO}x target).",
            ]
        lines.append("")
    lines.append(
        "Import rows: the statement alone, timed inside a fresh interpreter; command rows: "
        "the whole process, start-up included. Peak RSS: the child's peak resident set "
        "(`VmHWM`), interpreter included (the `python` row is the interpreter alone). "
        f"Median of {data['config']['runs']} interleaved rounds. *minimal*: the same venv with "
        "httpx's and httpcore's optional packages hidden from the child "
        f"({', '.join(data['config']['absent_in_minimal'])}), as after a plain "
        "`pip install httpx-extensions`."
    )
    lines += ["", _common.facts_line(data)]
    return "\n".join(lines)


INTRO = """\
## Start-up (`bench/startup.py`)

What `import httpx_extensions` costs beside `import httpx` and `import aiohttp`, in import
time and peak memory, and how long `httpx-extensions --help` takes. Each figure is a fresh
interpreter; the rows take turns, so noise hits them alike. pyspnego and its crypto stack
come only with the auth classes (the `NTLMAuth` row). The package's names are imported on
first use, so `import httpx_extensions` alone is cheap; `from httpx_extensions import
ExClient` brings httpx, httpcore (with trio, when trio is installed) and asyncio, which the
pool and transport modules import at module level; httpx itself imports httpcore only when a
client is made.

```sh
bench/run --only startup        # or: .venv/bin/python bench/startup.py
.venv/bin/python bench/startup.py --quick   # 5 rounds, writes nothing tracked
```
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=15, help="rounds (fresh interpreters per row)")
    p.add_argument(
        "--python", default=sys.executable, help="interpreter to measure (default: this one)"
    )
    p.add_argument("--quick", action="store_true", help="5 rounds; writes nothing tracked")
    p.add_argument("--out", type=Path, help="results JSON (default bench/results/startup.json)")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the README section")
    p.add_argument(
        "--render", action="store_true", help="measure nothing: README section from --out"
    )
    p.add_argument("--check-args", action="store_true", help="check the options and exit")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.quick:
        args.runs = min(args.runs, 5)
        args.out = args.out or _common.RESULTS / f"{NAME}.quick.raw.json"
        args.no_readme = True
    if args.no_readme and args.out is None and not args.render:
        args.out = _common.RESULTS / f"{NAME}.raw.json"  # a trial run leaves the tracked file
    args.out = args.out or _common.RESULTS / f"{NAME}.json"
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.check_args:
        return 0
    if args.render:
        try:
            data = json.loads(args.out.read_text())
        except (OSError, ValueError) as exc:
            sys.exit(f"{args.out}: cannot read the results ({exc})")
    else:
        data = measure(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {os.path.relpath(args.out)}", file=sys.stderr)
    text = render(data)
    if not args.no_readme:
        _common.replace_section(_common.README, NAME, INTRO + "\n" + text)
        print(f"wrote {os.path.relpath(_common.README)}", file=sys.stderr)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
