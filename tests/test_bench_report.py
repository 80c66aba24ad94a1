"""bench/plain.py's report: the ratio lines the README's performance claims are read from.

The issue's targets are judged on medians and their spread, not on one lucky run, so the report
states the ratio of the medians beside each side's slowest and fastest run.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """bench/plain.py imported from bench/, which leaves sys.path and sys.modules as found."""
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("plain", "_common"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module("plain")
    for name in ("plain", "_common"):
        sys.modules.pop(name, None)


def run(rate: float) -> dict:
    return {
        "req_per_s": rate,
        "completed": 5000,
        "stopped_early": False,
        "errors": 0,
        "error_kinds": {},
        "cpu_ms_per_1k": 50.0,
        "peak_rss_mib": 40.0,
        "conns_opened": 0,
        "warmup": {"conns_opened": 1},
    }


def results(rates: dict[str, list[float]]) -> dict:
    cells = []
    for client, values in rates.items():
        runs = [run(v) for v in values]
        best = max(runs, key=lambda r: r["req_per_s"])
        cells.append({"client": client, "concurrency": 1, "runs": runs, "best": best})
    return {
        "config": {"concurrency": [1], "clients": list(rates), "max_seconds": 60, "repeat": 3},
        "results": cells,
    }


def test_median_ratio_and_spread_are_reported(plain: ModuleType) -> None:
    # One lucky ExClient run (900) must not carry the claim: the median is 300, so 2.00x.
    data = results({"exclient": [300, 900, 200], "aiohttp": [150, 100, 160]})
    _, ratios, _ = plain.build_report(data)
    assert "- ExClient / aiohttp.ClientSession req/s — c=1: 5.62x" in ratios
    median = [line for line in ratios if "median" in line]
    assert median == [
        "- ExClient / aiohttp.ClientSession, median of each cell's runs (slowest-fastest run, "
        "ours / theirs) — c=1: 2.00x (200-900 / 100-160)"
    ]


def test_median_of_an_even_count_and_of_failed_runs(plain: ModuleType) -> None:
    common = plain._common
    assert common.median_rate([run(100), run(300)]) == 200
    # A run that failed has no req/s: it is not a zero in the median, and no runs is no figure.
    assert common.median_rate([run(100), {"run_failed": "boom"}, run(120)]) == 110
    assert common.median_rate([{"run_failed": "boom"}]) is None
    line = common.spread_line("A / B", [("c=1", [run(10)], [])])
    assert line.endswith("— c=1: n/a")
