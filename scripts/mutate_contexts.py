"""scripts/mutate's helper: which tests run which lines of the module it mutates.

As a pytest plugin (``-p mutate_contexts``; scripts/mutate copies this file next to the
package copy it puts on ``PYTHONPATH``), in a run whose coverage is started at interpreter
start-up (``COVERAGE_PROCESS_START``, read by coverage's ``.pth`` file), it labels the
coverage data with the running test's node id, and writes the tests it collected with each
one's run time (setup, call and teardown) to ``$MUTATE_ITEMS_FILE`` as JSON. Lines run outside
any test (imports, collection) keep the empty label. Python subprocesses a test starts are
measured too, labelled with the same node id: the rcfile's static
``context = ${MUTATE_TEST_CONTEXT}`` is read by each child at its start, and the plugin sets
that variable for the length of each test.

With ``$MUTATE_SELECT_FILE`` (node ids, one a line), it runs only those of the collected tests.
A mutant may rename a test parametrized with the module's values; such a test, missing from
the collected ones, runs under its new name (every case of that test function).

As a script, ``python mutate_contexts.py DATA_DIR SUFFIX OUT`` combines the data files in
DATA_DIR and writes ``{line: [labels]}`` for the measured file whose path ends with SUFFIX.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Generator
from pathlib import Path

import pytest

CONTEXT_VARIABLE = "MUTATE_TEST_CONTEXT"


class _Recorder:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.items: list[str] = []
        self.seconds: dict[str, float] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = [item.nodeid for item in session.items]

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        import coverage

        cov = coverage.Coverage.current()
        os.environ[CONTEXT_VARIABLE] = item.nodeid
        if cov is not None:
            cov.switch_context(item.nodeid)
        started = time.monotonic()
        try:
            return (yield)
        finally:
            self.seconds[item.nodeid] = time.monotonic() - started
            if cov is not None:
                cov.switch_context("")
            del os.environ[CONTEXT_VARIABLE]

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        data = {"items": self.items, "seconds": self.seconds}
        self.out.write_text(json.dumps(data), encoding="utf-8")


class _Selector:
    def __init__(self, chosen: list[str]) -> None:
        self.chosen = set(chosen)

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        missing = self.chosen - {item.nodeid for item in items}
        renamed = {test.split("[")[0] for test in missing}
        keep = [i for i in items if i.nodeid in self.chosen or i.nodeid.split("[")[0] in renamed]
        kept = {id(item) for item in keep}
        dropped = [item for item in items if id(item) not in kept]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_configure(config: pytest.Config) -> None:
    out = os.environ.get("MUTATE_ITEMS_FILE")
    if out:
        config.pluginmanager.register(_Recorder(Path(out)), "mutate_recorder")
    select = os.environ.get("MUTATE_SELECT_FILE")
    if select:
        chosen = Path(select).read_text(encoding="utf-8").split("\n")
        config.pluginmanager.register(_Selector([c for c in chosen if c]), "mutate_selector")
    # Import the mutated module now, outside any test, so that its import-time lines (def
    # lines, class bodies, constants) carry no test's label even when the package loads it
    # lazily: a mutant there runs every test.
    module = os.environ.get("MUTATE_MODULE")
    if module:
        importlib.import_module(module)


def dump(data_dir: Path, suffix: str, out: Path) -> None:
    import coverage

    cov = coverage.Coverage(data_file=str(data_dir / ".coverage"), config_file=False)
    cov.combine([str(data_dir)], keep=True)
    data = cov.get_data()
    lines: dict[int, list[str]] = {}
    for measured in data.measured_files():
        if measured.replace(os.sep, "/").endswith(suffix):
            for line, labels in data.contexts_by_lineno(measured).items():
                lines.setdefault(line, []).extend(labels)
    out.write_text(json.dumps(lines), encoding="utf-8")


if __name__ == "__main__":
    dump(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
