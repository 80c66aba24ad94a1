"""scripts/mutate's test selection, run on a small made-up package with its own tests.

Each mutant runs only the tests that run its lines (found once, under coverage): a mutant on a
line no test runs is reported as not covered without running anything; one on a line run at
import runs every test; code run in a test's subprocess counts for that test; the asyncio-first
pass and the second pass (trio half, slower files) keep their roles. The verdicts are those of
``--all-tests``, which runs every test against every mutant.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
import textwrap
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

_MODULE = """\
LIMIT = 3


def clamp(x):
    if x > LIMIT:
        return LIMIT
    return x


def spawned(x):
    return x


def trio_only(x):
    return not x


def slow_only(x):
    return not x


def never(x):
    return not x
"""

_FAST_TESTS = """\
import subprocess
import sys

from fakepkg import _calc


def test_clamp_cuts_large_values():
    assert _calc.clamp(5) == 3


def test_clamp_keeps_small_values():
    assert _calc.clamp(2) == 2


def test_spawned_in_a_child():
    # the child imports the mutated copy (it inherits PYTHONPATH)
    code = "from fakepkg import _calc; assert _calc.spawned(7) == 7"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_trio_only_named_for_the_second_pass():
    assert _calc.trio_only(0) is True
"""

_SLOW_TESTS = """\
from fakepkg import _calc


def test_slow_only():
    assert _calc.slow_only(1) is False
"""

# clamp(3) is 3 both ways: no test can tell ">" from ">=" there.
_EQUIVALENTS = """\
_calc.py | > -> >= | if x > LIMIT: | #1
    clamp(LIMIT) is LIMIT either way.
"""

_LINE = re.compile(
    r"^  (\S+(?: \S+)?)\s+#(\d+) _calc\.py:(\d+): .*?\]  (?:(\d+)\+(\d+) tests, )?[\d.]+ s$"
)


def _load_script() -> ModuleType:
    loader = SourceFileLoader("mutate_script", str(SCRIPTS / "mutate"))
    spec = importlib.util.spec_from_loader("mutate_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate_script"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    package = root / "src" / "fakepkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "_calc.py").write_text(_MODULE, encoding="utf-8")
    (root / "tests").mkdir()
    (root / "tests" / "test_fast.py").write_text(_FAST_TESTS, encoding="utf-8")
    (root / "tests" / "test_slow.py").write_text(_SLOW_TESTS, encoding="utf-8")
    (root / "equivalents.txt").write_text(_EQUIVALENTS, encoding="utf-8")
    return root


Verdicts = dict[int, tuple[str, tuple[int, int] | None]]


def _run(project: Path, all_tests: bool) -> tuple[Verdicts, list[str]]:
    """number -> (verdict, (tests in the first pass, in the second) or None), and survivors."""
    mutate = _load_script()
    out = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
            # the made-up tests need no plugin: pytest starts in a fraction of the time
            mp.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
            mp.setattr(mutate, "ROOT", project)
            mp.setattr(mutate, "PACKAGE", project / "src" / "fakepkg")
            mp.setattr(mutate, "EQUIVALENTS", project / "equivalents.txt")
            fast = [*mutate._ASYNCIO_ONLY, "tests/test_fast.py"]
            mp.setattr(mutate, "MODULES", {"calc": ("_calc.py", fast, ["tests/test_slow.py"])})
            _, _, _, survivors = mutate.mutate_module("calc", None, False, None, all_tests)
    finally:
        del sys.modules["mutate_script"]
    verdicts: Verdicts = {}
    for line in out.getvalue().split("\n"):
        match = _LINE.match(line)
        if match:
            counts = None if match[4] is None else (int(match[4]), int(match[5]))
            verdicts[int(match[2])] = (match[1], counts)
    return verdicts, survivors


@pytest.fixture(scope="module")
def selected(project: Path) -> tuple[Verdicts, list[str]]:
    return _run(project, all_tests=False)


@pytest.fixture(scope="module")
def numbers() -> dict[tuple[str, str], int]:
    """(function, mutation) -> the mutant's number, as --list prints it."""
    mutate = _load_script()
    try:
        _, found = mutate.mutants_of(_MODULE)
    finally:
        del sys.modules["mutate_script"]
    lines = _MODULE.split("\n")
    numbers = {}
    for mutant, _, _ in found:
        above = [line for line in lines[: mutant.line] if line.startswith("def ")]
        function = above[-1].split("(")[0][4:] if above else "<module>"
        numbers[(function, mutant.description)] = mutant.number
    return numbers


def test_mutate_verdicts_match_a_run_of_all_tests(
    project: Path, selected: tuple[Verdicts, list[str]]
) -> None:
    every, every_survivors = _run(project, all_tests=True)
    # with every test run, a line no test runs just survives
    expected = {n: "NOT COVERED" if v == "SURVIVED" else v for n, (v, _) in every.items()}
    assert {n: verdict for n, (verdict, _) in selected[0].items()} == expected
    assert len(selected[1]) == len(every_survivors) == 2


def test_mutate_line_no_test_runs_is_not_covered_and_runs_nothing(
    selected: tuple[Verdicts, list[str]], numbers: dict[tuple[str, str], int]
) -> None:
    verdicts, survivors = selected
    for mutation in ("not x -> x", "return x -> return None"):
        assert verdicts[numbers[("never", mutation)]] == ("NOT COVERED", (0, 0))
    # survivors: the exit status is 1
    assert [s.split("\n")[0] for s in survivors] == [
        f"#{numbers[('never', 'return x -> return None')]} _calc.py:23: return x -> return None"
        " (not covered: no test runs this line)",
        f"#{numbers[('never', 'not x -> x')]} _calc.py:23: not x -> x"
        " (not covered: no test runs this line)",
    ]


def test_mutate_import_time_line_runs_every_test(
    selected: tuple[Verdicts, list[str]], numbers: dict[tuple[str, str], int]
) -> None:
    # 3 asyncio-pass tests of test_fast.py; then its trio-named test and test_slow.py's
    for mutation in ("removed: assign", "3 -> 4"):
        assert selected[0][numbers[("<module>", mutation)]] == ("killed", (3, 2))


def test_mutate_runs_only_the_tests_that_run_the_mutated_lines(
    selected: tuple[Verdicts, list[str]], numbers: dict[tuple[str, str], int]
) -> None:
    verdicts = selected[0]
    # both clamp tests run the comparison; its mutant survives them: listed as equivalent
    assert verdicts[numbers[("clamp", "> -> >=")]] == ("equivalent", (2, 0))
    # only clamp(5) reaches "return LIMIT"
    assert verdicts[numbers[("clamp", "return x -> return None")]] == ("killed", (1, 0))


def test_mutate_line_run_in_a_test_subprocess_counts_for_that_test(
    selected: tuple[Verdicts, list[str]], numbers: dict[tuple[str, str], int]
) -> None:
    assert selected[0][numbers[("spawned", "return x -> return None")]] == ("killed", (1, 0))


def test_mutate_trio_half_and_slower_files_run_in_the_second_pass(
    selected: tuple[Verdicts, list[str]], numbers: dict[tuple[str, str], int]
) -> None:
    for function in ("trio_only", "slow_only"):
        for mutation in ("not x -> x", "return x -> return None"):
            assert selected[0][numbers[(function, mutation)]] == ("killed", (0, 1))


def test_mutate_removing_the_only_yield_selects_the_whole_body() -> None:
    mutate = _load_script()
    try:
        source = textwrap.dedent(
            """\
            def chunks(data):
                size = len(data)
                if size:
                    yield data


            def other():
                return 1
            """
        )
        tree, found = mutate.mutants_of(source)
        removals = [(m, path) for m, path, kind in found if kind == "remove"]
        lines = {m.line: mutate.mutant_lines(tree, path) for m, path in removals}
    finally:
        del sys.modules["mutate_script"]
    # a caller that never iterates still notices a plain function: any body line's tests
    assert lines[4] == {2, 3, 4}
    # (not the def line: it runs at import, and would select every test)
    assert lines[2] == {2}
