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
    """``source`` generated into ``destination`` through ``axes``. Both are relative to the
    package, except that a path starting with ``tests/`` is relative to the repository (the
    test files generated for a variant)."""

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
    Rule("bind_stream", "bind_sync_stream"),
    Rule(r"httpcore\.AsyncNetworkStream", "httpcore.NetworkStream"),
    Rule(r"httpcore\.AsyncConnectionPool", "httpcore.ConnectionPool"),
    Rule("AsyncHTTP11Connection", "HTTP11Connection"),
    Rule("handle_async_request", "handle_request"),
    # httpx's wording for the wrong kind of body or stream (the flavour modules hold both).
    Rule("SYNC_REQUEST_REFUSED", "ASYNC_REQUEST_REFUSED"),
    Rule("SYNC_STREAM_REFUSED", "ASYNC_STREAM_REFUSED"),
    Rule(r"\._async_(new_context|step|begin|advance)\b", r"._sync_\1"),  # the auth's drivers
    Rule("aclose", "close"),
    Rule("aread", "read"),
    # Our public names.
    Rule("ExClient", "ExSyncClient"),
    Rule("ExTransport", "ExSyncTransport"),
    # Imports: the shared leaf modules from the package, generated siblings from the folder.
    Rule(
        r"from \.(_auth|_exceptions|_extensions|_flavour|_network|_state|_synchronization)\b",
        r"from ..\1",
    ),
)

# The targets. Folders that hold generated files only (every .py there must be a target).
TARGETS: tuple[Target, ...] = ()
GENERATED_FOLDERS: tuple[str, ...] = ()

# --- The sync targets: the sync client's I/O layers, in src/httpx_extensions/_sync/. ----------
# Not generated (async only, or shared by both clients): _network.py (the asyncio backend;
# the sync side uses httpcore.SyncBackend), _synchronization.py (the pairs themselves),
# _auth.py (one class each for both clients), _exceptions.py, _extensions.py.
# (source, rules for that file only): each becomes _sync/<source> on httpx and, through the
# httpx2 axis as well, httpx2/_sync/<source> (the sync client of the httpx2 flavour).
_SYNC_SOURCES: tuple[tuple[str, tuple[Rule, ...]], ...] = (
    ("_http11.py", ()),
    ("_pool.py", ()),
    (
        "_proxy_auth.py",
        # The auth classes are shared: the package's _auth, not a sibling.
        (
            Rule(
                r'_AUTH_MODULE = __name__\.rpartition\("\."\)\[0\]',
                '_AUTH_MODULE = __name__.rpartition(".")[0].rpartition(".")[0]',
            ),
        ),
    ),
    (
        "_transport.py",
        (
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
        ),
    ),
    ("_client.py", ()),
)
TARGETS += tuple(
    Target(source, f"_sync/{source}", ("sync",), extra=extra) for source, extra in _SYNC_SOURCES
)
GENERATED_FOLDERS += ("_sync",)

# The sync twins of tests written once for ExClient, in tests/sync/: the same scenarios on the
# generated sync modules (their coverage comes from these, not from the async tests). The sync
# axis, then this one: anyio's sleeps and checkpoints become the thread's, the imports point
# at the sync modules.
AXES["sync-tests"] = (
    Rule(r"pytestmark = pytest\.mark\.anyio\n", ""),
    Rule(r"import anyio\nimport anyio\.lowlevel\n", ""),
    Rule(r"anyio\.sleep\(", "time.sleep("),
    Rule(r"anyio\.lowlevel\.checkpoint\(\)", "time.sleep(0)"),
    Rule("aiter_raw", "iter_raw"),
    # The generated modules' own names, not the async ones (the sync pool has its own
    # current_flow, the sync transport its own module globals).
    Rule(
        r"from httpx_extensions\.(_http11|_pool|_proxy_auth|_transport) import",
        r"from httpx_extensions._sync.\1 import",
    ),
    Rule(
        r"from httpx_extensions import (_http11|_transport) as",
        r"from httpx_extensions._sync import \1 as",
    ),
    Rule(r"from \.conftest import", "from ..conftest import"),
    Rule(r"from \.servers import", "from ..servers import"),
    # Helpers from async tests that have no twin here (the twins import each other).
    Rule(
        r"from \.(authflows|test_auth_cov|test_client|test_sync_client) import", r"from ..\1 import"
    ),
    # Tasks become threads (tests/sync/__init__.py holds the twins; a target that uses them
    # imports them with an extra rule).
    Rule(r"anyio\.create_task_group\(\)", "create_task_group()"),
    Rule(r"anyio\.Event\(\)", "Event()"),
    # A test run on asyncio alone runs once here too (no backend; one of asyncio's own, its
    # loop or its task.cancel(), is left out below with the reason).
    Rule(r'@pytest\.mark\.parametrize\("anyio_backend", \["asyncio"\]\)\n', ""),
)
# Tests whose scenarios need no change but the axes (or only the few rules given with them;
# test_http11.py is below, with its own).
_SYNC_TESTS = (
    "test_cov_client.py",
    "test_client_paths.py",
    "test_client_state.py",
    "test_http11_hardening.py",
    "test_http11_line_cache.py",
    "test_proxy_auth.py",
    "test_proxy_auth_cov.py",
    "test_proxy_auth_digest.py",
    "test_proxy_auth_parsing.py",
    "test_proxy_server.py",
    "test_retry.py",
    "test_retry_auth.py",
    "test_transport_paths.py",
    "test_transport_routes.py",
)


def _drop_sync(test: str, reason: str) -> Rule:
    """Leave one test (and its marks) out of a generated twin, with a comment saying why it
    has no thread twin there: up to the two blank lines that end it (or the file's end)."""
    return Rule(
        f"(@pytest\\.mark\\.[^\\n]*\\n)*def {test}\\b(?s:.*?)(\\n\\n\\n|\\n\\Z)",
        f"# {test}: not here\n# ({reason}).\n\n\n",
    )


# Pool scenarios whose tasks wait on each other (anyio.wait_all_tasks_blocked, a cancel
# scope, asyncio's own cancel): threads have no twin of "every other task is blocked now",
# so these are left out; tests/test_sync_cov_pool.py runs the sync pool's waits in threads.
_CONCURRENT = "tasks that wait on each other; see test_sync_cov_pool.py"
_POOL_CONCURRENT = {
    "test_pool.py": (
        "test_pool_waiters_are_served_fifo_one_per_freed_connection",
        "test_pool_oldest_waiter_for_another_origin_gets_the_slot",
        "test_pool_flow_evicts_its_own_reservation_instead_of_deadlocking",
        "test_pool_pin_waits_for_a_reservation_of_another_flow",
        "test_pool_pin_falls_back_when_its_connection_closes_meanwhile",
        "test_pool_close_fails_waiters_and_later_requests",
        "test_pool_native_asyncio_cancel_during_an_eviction_close_gives_the_slot_back",
        "test_pool_reservation_closed_by_the_server_is_not_handed_to_a_waiter",
        "test_pool_close_while_a_waiter_is_being_handed_a_connection",
    ),
    "test_pool_paths.py": (
        "test_pool_concurrent_requests_of_one_flow_pinning_one_connection",
        "test_pool_connect_failing_after_the_pool_closed_raises_the_connect_error",
        "test_pinned_waiter_cancelled_after_its_connection_closed",
        "test_two_requests_pinned_to_one_busy_connection_are_served_in_order",
        "test_pool_native_cancel_while_closing_an_expired_pin_leaves_the_queue",
        "test_pool_native_cancel_while_closing_after_the_pool_closed_fails_cleanly",
        "test_pool_native_cancel_of_a_pinned_waiter_woken_by_its_connection_closing",
        "test_pool_native_cancel_of_a_waiter_just_handed_a_connection_gives_it_back",
        "test_pool_native_cancel_while_closing_after_being_handed_a_connection",
        "test_pool_timeout_already_past_fires_before_a_later_release",
        "test_pool_used_from_two_event_loops_in_turn_keeps_its_timeouts",
    ),
}


def _import_twins(names: str, after: str) -> Rule:
    """Import the thread twins (tests/sync/__init__.py) a target uses, after an import line."""
    return Rule(f"{re.escape(after)}\n", f"{after}\nfrom . import {names}\n")


_SYNC_TEST_EXTRA: dict[str, tuple[Rule, ...]] = {
    # The wrong kind of body or stream for this client is an async one here.
    "test_client_paths.py": (
        Rule(r'content=iter\(\[b"x"\]\)', "content=httpx.AsyncByteStream()"),
        Rule(r"sync request with an AsyncClient", "async request with a sync Client"),
    ),
    "test_cov_client.py": (
        Rule(
            r"response\.stream = httpx\.SyncByteStream\(\)",
            "response.stream = httpx.AsyncByteStream()",
        ),
        Rule(r"for chunk in self\._inner:\n            yield chunk", "yield from self._inner"),
    ),
    "test_client_state.py": (Rule(r"import anyio\n", "from . import create_task_group\n"),),
    # The sync parser's own caches; its exchange is a plain call, not a coroutine to drive.
    "test_http11_line_cache.py": (
        Rule(
            r"from httpx_extensions import _http11\n",
            "from httpx_extensions._sync import _http11\n",
        ),
        Rule(r"_run\(_exchange\(raw\)\)", "_exchange(raw)"),
        Rule(r"import _run, _SegmentStream", "import _SegmentStream"),
    ),
    "test_retry.py": (Rule(r"import anyio\n", "from . import Event, create_task_group\n"),),
    "test_proxy_auth.py": (
        _import_twins("create_task_group", "import pytest"),
        _drop_sync(
            "test_proxy_cancellation_during_a_connect_handshake_leaves_nothing_reserved",
            "task cancellation is async only; test_sync_interrupt.py interrupts threads",
        ),
        _drop_sync(
            "test_proxy_2000_requests_at_concurrency_50_through_10_connections",
            "2000 threads; test_sync_paths.py goes through a proxy from 16",
        ),
    ),
}
# What only the tests left out use, out of the imports.
_POOL_IMPORTS = {
    # The fake connect's checkpoint is a thread's time.sleep(0).
    "test_pool.py": (
        Rule(r"import httpcore\n", "import time\n\nimport httpcore\n"),
        Rule(r"    close_all,\n", ""),
    ),
    "test_pool_paths.py": (
        Rule(r"import asyncio\n", ""),
        Rule(r"PoolClosed, PoolTimeout\n", "PoolClosed\n"),
        Rule(r"import ConnectionPool, Flow, PooledConnection, close_all", "import Flow, close_all"),
        Rule(r"import REQUEST, A, B,", "import A, B,"),
    ),
}
for _name, _tests in _POOL_CONCURRENT.items():
    _SYNC_TEST_EXTRA[_name] = (
        *_POOL_IMPORTS[_name],
        *(_drop_sync(test, _CONCURRENT) for test in _tests),
    )
TARGETS += tuple(
    Target(
        f"tests/{name}",
        f"tests/sync/{name}",
        ("sync", "sync-tests"),
        extra=_SYNC_TEST_EXTRA.get(name, ()),
    )
    for name in (*_SYNC_TESTS, *_POOL_CONCURRENT)
)
TARGETS += (
    Target(
        "tests/test_http11.py",
        "tests/sync/test_http11.py",
        ("sync", "sync-tests"),
        extra=(
            Rule(r"anyio\.fail_after\(20\), ", ""),  # the read timeout itself ends the wait
            # Task cancellation has no sync twin: tests/test_sync_interrupt.py interrupts
            # threads instead.
            Rule(
                '@pytest.mark.parametrize\\("where", \\["head", "body"\\]\\)\n',
                '@pytest.mark.skip(reason="task cancellation is async only; see '
                'test_sync_interrupt.py")\n@pytest.mark.parametrize("where", ["head", "body"])\n',
            ),
            Rule(r"anyio\.move_on_after\(0\.3\) as scope", "contextlib.nullcontext() as scope"),
            # A sync iterable body within _COALESCE_LIMIT is joined and checked before
            # anything goes out (the async client streams an async iterable): nothing is sent.
            Rule(
                r'assert b"content-length: 5" in head\.lower\(\)\n',
                'assert conn.received == b""  # checked before the head went out\n',
            ),
            # The in-memory exchange is a plain call here, not a coroutine to drive.
            Rule(r"_run\(_exchange", "(_exchange"),
        ),
    ),
)
GENERATED_FOLDERS += ("tests/sync",)

# --- httpx2 (issue 10) ------------------------------------------------------------------------
# httpx_extensions.httpx2: every module that imports httpx or httpcore, rewritten onto httpx2 and
# httpcore2. The real differences are in _flavour.py / _flavour_httpx2.py (hand-written, one
# per flavour); the generated modules import the httpx2 one. Modules that import neither
# (_extensions.py, __version__.py, testing/) are shared, not copied: the generated modules
# import them from the package above.
AXES["httpx2"] = (
    Rule("httpx", "httpx2"),
    Rule("httpcore", "httpcore2"),
    Rule(r"from \._flavour import", "from .._flavour_httpx2 import"),
    Rule(r"from \._extensions import", "from .._extensions import"),
    Rule(r"from \._state import", "from .._state import"),
    Rule(r'"\._state"', '".._state"'),  # __init__'s lazy table: the shared module
    Rule(r"from \.__version__ import", "from ..__version__ import"),
)
_HTTPX2_MODULES = (
    "__init__.py",
    "_auth.py",
    "_client.py",
    "_exceptions.py",
    "_http11.py",
    "_network.py",
    "_pool.py",
    "_proxy_auth.py",
    "_redact.py",
    "_synchronization.py",
    "_transport.py",
)
TARGETS += tuple(Target(name, f"httpx2/{name}", ("httpx2",)) for name in _HTTPX2_MODULES)
GENERATED_FOLDERS += ("httpx2",)
# Sync on httpx2: the sync axis, then the httpx2 one, then this, which points the imports of
# the shared leaf modules two packages up (httpx2/_sync/ -> httpx_extensions).
AXES["httpx2-sync"] = (
    Rule(r"from \.\.(_extensions|_state) import", r"from ...\1 import"),
    Rule(r"from \.\._flavour import", "from ..._flavour_httpx2 import"),
)
TARGETS += (Target("_sync/__init__.py", "httpx2/_sync/__init__.py", ("httpx2",)),)
TARGETS += tuple(
    Target(source, f"httpx2/_sync/{source}", ("sync", "httpx2", "httpx2-sync"), extra=extra)
    for source, extra in _SYNC_SOURCES
)
# The project's own tests that exercise the pool, the parser, the auth, the client and proxy
# auth, run against httpx_extensions.httpx2 as well (tests/httpx2/, the fixtures and servers
# of tests/ shared). The httpx2 axis, then this one, which points the imports at the subpackage.
AXES["httpx2-tests"] = (
    Rule(r"from httpx_extensions import", "from httpx_extensions.httpx2 import"),
    Rule(r"import httpx_extensions\n", "from httpx_extensions import httpx2 as httpx_extensions\n"),
    Rule(
        r"from httpx_extensions\.(_auth|_client|_http11|_pool|_proxy_auth|_transport"
        r"|_sync\._pool) import",
        r"from httpx_extensions.httpx2.\1 import",
    ),
    Rule(r"httpx_extensions\._flavour\b", "httpx_extensions._flavour_httpx2"),
    Rule(r"from \.conftest import", "from ..conftest import"),
    Rule(r"from \.servers import", "from ..servers import"),
    Rule(r"from \.servers\.", "from ..servers."),
)
_HTTPX2_TESTS = (
    "__init__.py",
    "authflows.py",
    "test_auth.py",
    "test_client.py",
    "test_flavour.py",
    "test_http11.py",
    "test_pool.py",
    "test_proxy_auth.py",
    "test_sync_client.py",
    "test_sync_interrupt.py",
    "test_sync_paths.py",
    "test_sync_proxy.py",
    "test_auth_options.py",
    "test_auth_rejection.py",
    "test_channel_binding.py",
    "test_client_fast_path.py",
    "test_client_state.py",
    "test_kerberos.py",
    "test_pool_handoff.py",
    "test_pool_partition_handoff.py",
    "test_retry.py",
    "test_retry_auth.py",
    "test_transport_paths.py",
)
_RESPX_ONLY = Rule(
    "async def test_client_respx",
    '@pytest.mark.skip(reason="respx mocks httpx and httpcore only; the path it takes is '
    'test_flavour.py::test_flavour_a_patched_stock_pool_is_bound_as_upstream")\n'
    "async def test_client_respx",
)
_TRANSPORT_RESPX_ONLY = Rule(
    "async def test_transport_errors_raised_by_a_mocked_httpcore",
    '@pytest.mark.skip(reason="respx mocks httpx and httpcore only")\n'
    "async def test_transport_errors_raised_by_a_mocked_httpcore",
)
# httpx2 leaves a bad Location unfollowed without an error (tests/test_flavour.py checks it).
_REDIRECT_BAD_RAISES = Rule(
    r'        \("/redirect-bad", \{\}, httpx2\.RemoteProtocolError\),\n', ""
)
_HTTPX2_TEST_EXTRA = {
    "test_client.py": (_RESPX_ONLY,),
    "test_transport_paths.py": (_TRANSPORT_RESPX_ONLY,),
    "test_client_fast_path.py": (_REDIRECT_BAD_RAISES,),
}
TARGETS += tuple(
    Target(
        f"tests/{name}",
        f"tests/httpx2/{name}",
        ("httpx2", "httpx2-tests"),
        extra=_HTTPX2_TEST_EXTRA.get(name, ()),
    )
    for name in _HTTPX2_TESTS
)
GENERATED_FOLDERS += ("tests/httpx2",)
# --- end httpx2 -------------------------------------------------------------------------------

BANNER = (
    "# Generated by scripts/generate from {source} ({axes}).\n# Do not edit: edit the source.\n"
)


def resolve(relative: str) -> Path:
    """The file or folder a target (or ``GENERATED_FOLDERS``) names: see ``Target``."""
    return ROOT / relative if relative.startswith("tests/") else PACKAGE / relative


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
        source=resolve(target.source).relative_to(ROOT).as_posix(), axes=", ".join(target.axes)
    )
    return banner + text


def ruff_format(text: str, destination: Path) -> str:
    """Sort and deduplicate the imports, then format ``text`` as ruff would for
    ``destination``: a rewrite can reorder imports (``._flavour`` becoming
    ``.._flavour_httpx2``) and make two the same (``AsyncIterable, Iterable`` ->
    ``Iterable, Iterable``). None is removed as unused: it may be a re-export."""
    for command in (["check", "--select", "I,F811", "--fix-only", "--exit-zero"], ["format"]):
        result = subprocess.run(
            [str(RUFF), *command, "--stdin-filename", str(destination), "-"],
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
        text = result.stdout
    return text


def generate(targets: Sequence[Target]) -> tuple[dict[Path, str], Usage]:
    usage = Usage()
    outputs: dict[Path, str] = {}
    for target in targets:
        unknown = [axis for axis in target.axes if axis not in AXES]
        if unknown:
            raise SystemExit(f"scripts/generate: {target.destination}: unknown axes {unknown}")
        source = resolve(target.source)
        destination = resolve(target.destination)
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
            for p in sorted(resolve(folder).rglob("*.py"))
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
