"""pytest plugin: run httpx's own tests with ``httpx.AsyncClient`` swapped for ``ExClient``.

Loaded by ``run.py`` with ``-p exclient_plugin``. pytest imports ``-p`` plugins before it reads
any conftest or test module, so by the time httpx's tests run ``import httpx`` the package
attribute ``httpx.AsyncClient`` already is ``httpx_extensions.ExClient`` (including in
``@pytest.mark.parametrize`` arguments, which are evaluated at import).

Only the attribute on the ``httpx`` package is replaced. ``ExClient`` subclasses the real class,
captured when ``httpx_extensions`` was imported, and httpx's own modules use their module
globals, so the library keeps seeing the real ``AsyncClient``; ``_verify_swap`` checks this at
start-up and refuses to run if it does not hold.

The plugin also
* keeps only the tests that exercise ``AsyncClient`` (see ``_in_scope``): the others are not
  collected at all (they are counted as "out of scope", not as deselected);
* deselects the tests listed in ``deselected.txt`` (``nodeid  # reason``), failing the run
  if an entry matches no collected test, so the list cannot go stale;
* writes the outcome counts as JSON for ``run.py`` (``--httpx-suite-results``).

``run.py --httpx2`` runs the same tests with their names rewritten to httpx2/httpcore2; the
environment then says which flavour (``HTTPX_SUITE_FLAVOUR=httpx2``: ``httpx2.AsyncClient``
becomes ``httpx_extensions.httpx2.ExClient``) and whether this is the baseline run
(``HTTPX_SUITE_BASELINE=1``: no swap, stock ``AsyncClient``; deselected.txt's ids are read with
``AsyncClient`` for ``ExClient``, so both runs select the same tests).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pathlib
import sys
import types
import typing

FLAVOUR = os.environ.get("HTTPX_SUITE_FLAVOUR", "httpx")
BASELINE = os.environ.get("HTTPX_SUITE_BASELINE") == "1"
if FLAVOUR not in ("httpx", "httpx2"):  # pragma: no cover
    raise RuntimeError(f"HTTPX_SUITE_FLAVOUR must be httpx or httpx2, not {FLAVOUR!r}")
httpx = importlib.import_module(FLAVOUR)

# HTTPX_SUITE_MODE=sync (run.py --sync): httpx.Client -> ExSyncClient, the sync tests.
SYNC = os.environ.get("HTTPX_SUITE_MODE") == "sync"
NAME = "Client" if SYNC else "AsyncClient"
REAL_ASYNC_CLIENT = getattr(httpx, NAME)  # (the sync Client in sync mode)

import pytest  # noqa: E402

# (must come after capturing the real class)
httpx_extensions = importlib.import_module(
    "httpx_extensions" if FLAVOUR == "httpx" else "httpx_extensions.httpx2"
)
ExClient: type = (
    REAL_ASYNC_CLIENT
    if BASELINE
    else httpx_extensions.ExSyncClient
    if SYNC
    else httpx_extensions.ExClient
)

# Test files are selected by run.py; inside them, these folders keep every async test.
ASYNC_DIRS = ("tests/client/",)


def _code_objects(code: types.CodeType) -> typing.Iterator[types.CodeType]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const
            yield from _code_objects(const)


def _functions_naming_async_client(module: types.ModuleType) -> list[str]:
    """Functions of a module whose bytecode looks up a name/attribute ``AsyncClient``."""
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return []
    source = pathlib.Path(path).read_text(encoding="utf-8")
    top = compile(source, path, "exec")
    return [
        f"{module.__name__}:{code.co_qualname}"
        for code in _code_objects(top)
        if NAME in code.co_names
        # A module global bound to the real class (httpx._api's `Client`) is not the swap.
        and getattr(module, NAME, None) is not REAL_ASYNC_CLIENT
    ]


def _verify_swap() -> list[str]:
    """Check that the swap is visible to tests only; return a description of what was checked."""
    problems: list[str] = []
    if BASELINE:
        return []
    if REAL_ASYNC_CLIENT is ExClient or REAL_ASYNC_CLIENT.__qualname__ != NAME:
        problems.append(f"{FLAVOUR}.{NAME} was already replaced: {REAL_ASYNC_CLIENT!r}")
    if not issubclass(ExClient, REAL_ASYNC_CLIENT):
        problems.append(f"{ExClient.__name__} does not subclass the real {FLAVOUR}.{NAME}")
    if getattr(importlib.import_module(f"{FLAVOUR}._client"), NAME) is not REAL_ASYNC_CLIENT:
        problems.append(f"{FLAVOUR}._client.{NAME} is not the real class")
    if getattr(httpx, NAME) is not ExClient:
        problems.append(f"{FLAVOUR}.{NAME} is not {ExClient.__name__} after the swap")
    # Module globals bound to the swapped name, and code that looks the name up at run time.
    # httpx._client defines the class: its functions resolve `AsyncClient` to its own global.
    lookups: list[str] = []
    for name, module in sorted(sys.modules.items()):
        if module is None or not (
            name == FLAVOUR or name.startswith((f"{FLAVOUR}.", "httpx_extensions"))
        ):
            continue
        if name != FLAVOUR and getattr(module, NAME, REAL_ASYNC_CLIENT) is ExClient:
            problems.append(f"{name}.{NAME} is {ExClient.__name__}")
        if name != f"{FLAVOUR}._client":
            lookups.extend(_functions_naming_async_client(module))
    if lookups:
        problems.append("functions that look up AsyncClient at run time: " + ", ".join(lookups))
    if problems:
        raise pytest.UsageError("httpx-suite: class swap check failed:\n  " + "\n  ".join(problems))
    return sorted(
        n for n in sys.modules if n == FLAVOUR or n.startswith((f"{FLAVOUR}.", "httpx_extensions"))
    )


# The swap itself, at plugin import time (before any conftest or test module is imported).
setattr(httpx, NAME, ExClient)
_CHECKED_MODULES = _verify_swap()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("httpx-suite")
    group.addoption("--httpx-suite-deselect", default=None, help="deselected.txt to apply")
    group.addoption("--httpx-suite-results", default=None, help="write outcome counts here")
    group.addoption(
        "--httpx-suite-partial",
        action="store_true",
        help="only some test files are collected: do not require every deselect entry to match",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    if BASELINE:
        return [f"httpx-suite: baseline, stock {FLAVOUR}.AsyncClient ({httpx.__version__})"]
    return [
        f"httpx-suite: {FLAVOUR}.{NAME} -> {ExClient.__module__}.{ExClient.__name__} "
        f"(httpx_extensions {httpx_extensions.__version__}, {FLAVOUR} {httpx.__version__}); "
        f"real class kept by {len(_CHECKED_MODULES)} {FLAVOUR}/httpx_extensions modules "
        "(checked)"
    ]


def read_deselected(path: pathlib.Path) -> dict[str, str]:
    """``nodeid  # reason`` lines (blank lines and lines starting with '#' are skipped)."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, sep, reason = line.partition("  # ")
        if not sep or not reason.strip():
            raise pytest.UsageError(f"{path}:{number}: expected 'nodeid  # reason', got {raw!r}")
        nodeid = nodeid.strip()
        if BASELINE:  # the parametrized ids name the stock class there
            nodeid = nodeid.replace("[ExClient-", "[AsyncClient-")
        if nodeid in entries:
            raise pytest.UsageError(f"{path}:{number}: duplicate entry {nodeid}")
        entries[nodeid] = reason.strip()
    return entries


def _in_scope(item: pytest.Item) -> bool:
    """Whether a collected httpx test exercises ``AsyncClient``.

    In scope: every async test under tests/client/, and any test (async or sync) whose source,
    decorators included, names ``AsyncClient``, except parametrized instances that run the
    sync ``httpx.Client`` (``test_proxies_environ`` runs once per client class).
    """
    if not isinstance(item, pytest.Function):
        return False
    function = item.function
    callspec = getattr(item, "callspec", None)
    if SYNC:
        # Sync mode: every sync test under tests/client/, and any test naming httpx.Client,
        # except instances parametrized with the async class.
        if callspec is not None:
            for value in callspec.params.values():
                if isinstance(value, type) and issubclass(value, httpx.AsyncClient):
                    return False
        if not inspect.iscoroutinefunction(function) and item.nodeid.startswith(ASYNC_DIRS):
            return True
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):  # pragma: no cover
            return False
        return "httpx.Client" in source
    if callspec is not None:
        for value in callspec.params.values():
            if isinstance(value, type) and issubclass(value, httpx.Client):
                return False
    if inspect.iscoroutinefunction(function) and item.nodeid.startswith(ASYNC_DIRS):
        return True
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # pragma: no cover
        return False
    return "AsyncClient" in source


class _State:
    out_of_scope = 0
    deselected = 0
    selected: typing.ClassVar[list[str]] = []
    outcomes: typing.ClassVar[dict[str, list[str]]] = {
        "passed": [],
        "failed": [],
        "skipped": [],
        "xfailed": [],
        "xpassed": [],
        "error": [],
    }


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> typing.Generator[None, typing.Any, typing.Any]:
    """Leave out-of-scope tests uncollected, so pytest's counts are those of the suite."""
    result = yield
    if isinstance(result, list):
        kept = [r for r in result if not isinstance(r, pytest.Function) or _in_scope(r)]
        _State.out_of_scope += len(result) - len(kept)
        return kept
    if isinstance(result, pytest.Function) and not _in_scope(result):
        _State.out_of_scope += 1
        return None
    return result


@pytest.hookimpl(tryfirst=True)  # before -k/-m, so the list is checked against every test
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    kept = list(items)
    deselect_path = config.getoption("--httpx-suite-deselect")
    entries = read_deselected(pathlib.Path(deselect_path)) if deselect_path else {}
    by_id = {item.nodeid: item for item in kept}
    unknown = [nodeid for nodeid in entries if nodeid not in by_id]
    if unknown and not config.getoption("--httpx-suite-partial"):
        raise pytest.UsageError(
            "httpx-suite: deselected.txt names tests that are not collected (or out of "
            "scope):\n  " + "\n  ".join(unknown)
        )
    deselected = [item for item in kept if item.nodeid in entries]
    selected = [item for item in kept if item.nodeid not in entries]
    # httpx marks the tests that leave this machine `network`; never run one by accident.
    network = [item.nodeid for item in selected if item.get_closest_marker("network")]
    if network:
        raise pytest.UsageError(
            "httpx-suite: tests marked `network` reach beyond loopback; add them to "
            "deselected.txt:\n  " + "\n  ".join(network)
        )
    for item in selected:
        module_httpx = getattr(item.module, FLAVOUR, httpx)
        if module_httpx is not httpx:  # pragma: no cover
            raise pytest.UsageError(f"{item.nodeid}: its module imported another httpx")
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    _State.deselected = len(deselected)
    _State.selected = [item.nodeid for item in selected]
    items[:] = selected


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcomes = _State.outcomes
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            outcomes["xfailed" if report.skipped else "xpassed"].append(report.nodeid)
        else:
            outcomes[report.outcome].append(report.nodeid)
    elif report.failed:  # setup or teardown error
        outcomes["error"].append(report.nodeid)
    elif report.when == "setup" and report.skipped:
        outcomes["skipped"].append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if getattr(httpx, NAME) is not ExClient:  # pragma: no cover
        _State.outcomes["error"].append(f"<session>: {FLAVOUR}.{NAME} was restored mid-run")
    path = session.config.getoption("--httpx-suite-results")
    if not path:
        return
    data = {
        "exitstatus": int(exitstatus),
        "out_of_scope": _State.out_of_scope,
        "deselected": _State.deselected,
        "selected": len(_State.selected),
        "outcomes": _State.outcomes,
    }
    pathlib.Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")
