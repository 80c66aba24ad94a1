"""Generate the variant modules from the one hand-written source, and check they are current.

The tree holds ONE pool, ONE parser, ONE auth, written async on httpx (DESIGN.md, "Variants").
The other variants (async on httpx2, sync on httpx, sync on httpx2) are generated from it by
word-boundary rewrites along two *axes*:

    sync     async -> sync    (``async def`` -> ``def``, ``await x`` -> ``x``, anyio -> threading)
    httpx2   httpx -> httpx2  (``httpx`` -> ``httpx2``, ``httpcore`` -> ``httpcore2``)

A *target* names a source file, the generated file, and the axes applied, in order (so sync on
httpx2 is ``("sync", "httpx2")``, applied to the async httpx source). Generated files open with a
banner saying where they come from; they are formatted with ruff, so a rewrite that lengthens a
line does not break the style check.

    scripts/generate            write every target
    scripts/generate --check    fail (exit 1) when a generated file is stale or missing, when a
                                file under a generated folder has no target, or when a rule of a
                                used axis matched nothing (a dead rule hides a change upstream)

The model is httpcore's ``scripts/unasync.py``; this one adds axes, the banner, formatting and the
dead-rule check. Rules are regular expressions matched at word boundaries: ``httpx`` does not
match inside ``httpx_extensions``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "httpx_extensions"
RUFF = ROOT / ".venv" / "bin" / "ruff"


@dataclass(frozen=True)
class Rule:
    """One rewrite: ``pattern`` (a regular expression, anchored at word boundaries unless it
    starts or ends with a non-word character) becomes ``replacement``."""

    pattern: str
    replacement: str

    def compiled(self) -> re.Pattern[str]:
        head = r"\b" if re.match(r"\w", self.pattern) else ""
        # A pattern ending in an escape (``\n``, ``\.``) ends in a non-word character.
        tail = r"\b" if re.search(r"(?<!\\)\w$", self.pattern) else ""
        return re.compile(head + self.pattern + tail)


@dataclass(frozen=True)
class Target:
    """``source`` (relative to the package) generated into ``destination`` through ``axes``."""

    source: str
    destination: str
    axes: tuple[str, ...]
    # Rules for this file only, applied after the axes (for a name that differs in one place).
    extra: tuple[Rule, ...] = ()


# The axes. Each rule is applied to every line of every target that uses the axis, in order.
AXES: dict[str, tuple[Rule, ...]] = {}

# --- The sync axis (async -> sync). ---------------------------------------------------------
# Everything that is more than a rename lives in _synchronization.py as an Async*/Sync* (or
# async_*/sync_*) pair, so these rules only rename. Generated modules import each other from
# their own folder and the shared leaf modules from the package.
AXES["sync"] = (
    # Syntax.
    Rule("async def ", "def "),
    Rule("async with ", "with "),
    Rule("async for ", "for "),
    Rule("await ", ""),
    Rule("__aenter__", "__enter__"),
    Rule("__aexit__", "__exit__"),
    Rule("__aiter__", "__iter__"),
    Rule("__anext__", "__next__"),
    Rule("StopAsyncIteration", "StopIteration"),
    Rule("AsyncIterator", "Iterator"),
    Rule("AsyncIterable", "Iterable"),
    Rule(r"Awaitable\[ConnectionLike\]", "ConnectionLike"),
    Rule(r"from collections\.abc import Awaitable, ", "from collections.abc import "),
    Rule(r"inspect\.isasyncgen", "inspect.isgenerator"),
    # Our primitives (_synchronization.py).
    Rule("AsyncLock", "SyncLock"),
    Rule("AsyncWakeUp", "SyncWakeUp"),
    Rule("AsyncBackends", "SyncBackends"),
    Rule("async_shield", "sync_shield"),
    Rule("async_checkpoint", "sync_checkpoint"),
    # httpx and httpcore: the sync twin of each async name.
    Rule(r"httpx\.AsyncClient", "httpx.Client"),
    Rule(r"httpx\.AsyncBaseTransport", "httpx.BaseTransport"),
    Rule(r"httpx\.AsyncHTTPTransport", "httpx.HTTPTransport"),
    Rule(r"httpx\.AsyncByteStream", "httpx.SyncByteStream"),
    Rule("BoundAsyncStream", "BoundSyncStream"),
    Rule(r"httpcore\.AsyncNetworkStream", "httpcore.NetworkStream"),
    Rule(r"httpcore\.AsyncConnectionPool", "httpcore.ConnectionPool"),
    Rule("AsyncHTTP11Connection", "HTTP11Connection"),
    Rule("handle_async_request", "handle_request"),
    Rule(r"\._async_(new_context|step)\b", r"._sync_\1"),  # the auth's driver pairs
    Rule("aclose", "close"),
    Rule("aread", "read"),
    # Our public names.
    Rule("ExClient", "ExSyncClient"),
    Rule("ExTransport", "ExSyncTransport"),
    # Imports: the shared leaf modules from the package, generated siblings from the folder.
    Rule(
        r"from \.(_auth|_exceptions|_extensions|_network|_state|_synchronization)\b", r"from ..\1"
    ),
)

# The targets. Folders that hold generated files only (every .py there must be a target).
TARGETS: tuple[Target, ...] = ()
GENERATED_FOLDERS: tuple[str, ...] = ()

# --- The sync targets: the sync client's I/O layers, in src/httpx_extensions/_sync/. ----------
# Not generated (async only, or shared by both clients): _network.py (the asyncio backend;
# the sync side uses httpcore.SyncBackend), _synchronization.py (the pairs themselves),
# _auth.py (one class each for both clients), _exceptions.py, _extensions.py.
TARGETS += (
    Target("_http11.py", "_sync/_http11.py", ("sync",)),
    Target("_pool.py", "_sync/_pool.py", ("sync",)),
    Target(
        "_proxy_auth.py",
        "_sync/_proxy_auth.py",
        ("sync",),
        # The auth classes are shared: the package's _auth, not a sibling.
        extra=(
            Rule(
                r'_AUTH_MODULE = __name__\.rpartition\("\."\)\[0\]',
                '_AUTH_MODULE = __name__.rpartition(".")[0].rpartition(".")[0]',
            ),
        ),
    ),
    Target(
        "_transport.py",
        "_sync/_transport.py",
        ("sync",),
        extra=(
            # httpx.Client sends a SyncByteStream (it refuses others before the transport).
            Rule(
                r"wire, request\.stream, extensions",
                "wire, typing.cast(typing.Iterable[bytes], request.stream), extensions",
            ),
            Rule(
                r"= self\._request\.stream\n",
                "= typing.cast(typing.Iterable[bytes], self._request.stream)\n",
            ),
            # The seed's alias names the async transport only.
            Rule(r'__all__ = \["AsyncHTTPTransportMixin", ', "__all__ = ["),
            Rule(
                r"\n\n#: The seed's name for the transport, kept importable\.\n"
                r"AsyncHTTPTransportMixin = ExSyncTransport",
                "",
            ),
            # httpx.Response's own wording, sync side.
            Rule(
                "Attempted to call an async close on an sync stream.",
                "Attempted to call an sync close on an async stream.",
            ),
        ),
    ),
    Target(
        "_client.py",
        "_sync/_client.py",
        ("sync",),
        extra=(
            # httpx.Client's own wording.
            Rule(
                "Attempted to send an sync request with an AsyncClient instance.",
                "Attempted to send an async request with an sync Client instance.",
            ),
        ),
    ),
)
GENERATED_FOLDERS += ("_sync",)

BANNER = "# Generated by scripts/generate from {source} ({axes}). Do not edit: edit the source.\n"


@dataclass
class Usage:
    """How often each rule of each axis matched, over all targets."""

    counts: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, axis: str, index: int, n: int) -> None:
        self.counts[(axis, index)] = self.counts.get((axis, index), 0) + n


def rewrite(text: str, target: Target, usage: Usage) -> str:
    """Apply the target's axes (then its extra rules) to ``text``."""
    for axis in target.axes:
        for index, rule in enumerate(AXES[axis]):
            text, n = rule.compiled().subn(rule.replacement, text)
            usage.add(axis, index, n)
    for rule in target.extra:
        text, n = rule.compiled().subn(rule.replacement, text)
        if n == 0:
            raise SystemExit(
                f"scripts/generate: the extra rule {rule.pattern!r} for {target.destination} "
                "matched nothing; remove it or fix it"
            )
    banner = BANNER.format(
        source=f"src/httpx_extensions/{target.source}", axes=", ".join(target.axes)
    )
    return banner + text


def ruff_format(text: str, destination: Path) -> str:
    """Format ``text`` as ruff would format ``destination``.

    Imports are sorted and deduplicated first: renames reorder them (``.._x`` sorts before
    ``._y``) and can make two the same (``AsyncIterable, Iterable`` -> ``Iterable, Iterable``).
    None is removed as unused: it may be a re-export.
    """
    fixed = subprocess.run(
        [
            *(str(RUFF), "check", "--fix", "--exit-zero", "--quiet", "--select", "I,F811"),
            *("--stdin-filename", str(destination), "-"),
        ],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if fixed.returncode == 0:
        text = fixed.stdout
    result = subprocess.run(
        [str(RUFF), "format", "--stdin-filename", str(destination), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"scripts/generate: ruff could not format {destination}: {result.stderr.strip()}"
        )
    return result.stdout


def generate(targets: Sequence[Target]) -> tuple[dict[Path, str], Usage]:
    usage = Usage()
    outputs: dict[Path, str] = {}
    for target in targets:
        unknown = [axis for axis in target.axes if axis not in AXES]
        if unknown:
            raise SystemExit(f"scripts/generate: {target.destination}: unknown axes {unknown}")
        source = PACKAGE / target.source
        destination = PACKAGE / target.destination
        text = rewrite(source.read_text(encoding="utf-8"), target, usage)
        outputs[destination] = ruff_format(text, destination)
    return outputs, usage


def dead_rules(targets: Sequence[Target], usage: Usage) -> list[str]:
    used_axes = {axis for target in targets for axis in target.axes}
    return [
        f"{axis}: {rule.pattern!r} -> {rule.replacement!r}"
        for axis in sorted(used_axes)
        for index, rule in enumerate(AXES[axis])
        if usage.counts.get((axis, index), 0) == 0
    ]


def untracked(outputs: dict[Path, str]) -> list[Path]:
    # A generated folder's __init__.py is hand-written: it says what the folder is.
    found: list[Path] = []
    for folder in GENERATED_FOLDERS:
        found += [
            p
            for p in sorted((PACKAGE / folder).rglob("*.py"))
            if p not in outputs and p.name != "__init__.py"
        ]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/generate", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when anything is stale")
    args = parser.parse_args(argv)
    outputs, usage = generate(TARGETS)
    problems = [f"dead rule (matched nothing): {rule}" for rule in dead_rules(TARGETS, usage)]
    problems += [
        f"{path.relative_to(ROOT)}: in a generated folder but no target makes it"
        for path in untracked(outputs)
    ]
    for path, text in outputs.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            state = "missing" if current is None else "stale"
            problems.append(f"{path.relative_to(ROOT)}: {state}; run scripts/generate")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"scripts/generate: wrote {path.relative_to(ROOT)}")
    for problem in problems:
        print(f"scripts/generate: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
