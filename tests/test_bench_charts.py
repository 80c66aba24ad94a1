"""bench/charts.py: the benchmark charts, drawn from results JSON shaped like the real ones.

matplotlib is a benchmark dependency (bench/requirements.txt), not a dev one: without it
these tests are skipped.
"""

from __future__ import annotations

import importlib
import json
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("matplotlib")

BENCH = Path(__file__).resolve().parent.parent / "bench"
BENCH_MODULES = ("charts", "plain", "ntlm", "_common")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def charts(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """bench/charts.py imported from bench/, which leaves sys.path and sys.modules as found."""
    monkeypatch.syspath_prepend(str(BENCH))
    for name in BENCH_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module("charts")
    for name in BENCH_MODULES:
        sys.modules.pop(name, None)


def machine() -> dict:
    return {
        "cpu_count": 2,
        "cpus_usable": 2,
        "cpu_model": "Test CPU",
        "loadavg_at_start": [0.5, 0.5, 0.5],
        "platform": "Linux",
        "python": "3.11.7",
        "python_implementation": "CPython",
        "packages": {"httpx-extensions": "0.0.1", "httpx": "0.28.1", "aiohttp": None},
    }


def plain_results() -> dict:
    clients, concurrency = ["exclient", "httpx", "aiohttp"], [1, 10, 100, 1000]
    results = []
    for c in concurrency:
        for i, name in enumerate(clients):
            best = {
                "wall_s": 1.0,
                "completed": 500,
                "ok": 500,
                "errors": 0,
                "error_kinds": {},
                "stopped_early": False,
                "req_per_s": 500.0 * (i + 1) + c,
                "cpu_ms_per_1k": 400.0,
            }
            results.append({"client": name, "concurrency": c, "runs": [best], "best": best})
    results[4]["best"].update(errors=7, error_kinds={"ReadTimeout": 7}, ok=493)  # c=10, httpx
    results[-1]["best"] = {"run_failed": "worker exited 1: boom"}  # c=1000, aiohttp
    return {
        "benchmark": "plain-get",
        "generated": "2026-01-02 03:04 UTC",
        "config": {
            "requests": 500,
            "warmup": 50,
            "concurrency": concurrency,
            "clients": clients,
            "repeat": 1,
            "max_seconds": 10,
            "max_connections": 100,
            "event_loop": "asyncio",
        },
        "machine": machine(),
        "server": {"nginx": "1.22.1"},
        "results": results,
        "total_seconds": 12.0,
    }


def ntlm_results() -> dict:
    clients = ["exclient", "httpx-ntlm", "requests-ntlm", "aiohttp-ntlm"]
    modes, rows = ["per-connection", "per-request"], ["1", "10", "50", "50/10"]
    results = []
    for mode in modes:
        for row in rows:
            for i, name in enumerate(clients):
                failed = 150 if name == "httpx-ntlm" and row != "1" else 0
                result = {
                    "ok": 200 - failed,
                    "failed": failed,
                    "kinds": {"HTTP 401": failed} if failed else {},
                    "stopped_early": False,
                    "wall_s": 0.5,
                    "completed": 200,
                    "req_per_s": (200 - failed) / 0.5 * (i + 1),
                }
                results.append(
                    {
                        "client": name,
                        "mode": mode,
                        "row": row,
                        "concurrency": int(row.split("/")[0]),
                        "pool": 10 if row == "50/10" else None,
                        "runs": [result],
                        "result": result,
                    }
                )
    results[-1]["result"] = None  # never ran
    return {
        "benchmark": "ntlm",
        "generated": "2026-01-02 04:05 UTC",
        "config": {
            "requests": 200,
            "requests_per_client": dict.fromkeys(clients, 200),
            "rows": rows,
            "modes": modes,
            "clients": clients,
            "max_seconds": 20,
            "repeat": 1,
            "repeat_seconds": 10,
        },
        "machine": machine(),
        "source": {"commit": "abc1234", "src_modified": False},
        "results": results,
        "total_seconds": 30.0,
    }


@pytest.fixture
def results(tmp_path: Path) -> dict[str, Path]:
    paths = {"plain": tmp_path / "plain.json", "ntlm": tmp_path / "ntlm.json"}
    paths["plain"].write_text(json.dumps(plain_results()))
    paths["ntlm"].write_text(json.dumps(ntlm_results()))
    return paths


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (signature, then the IHDR chunk)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND", f"{path} is cut short"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def draw(charts: ModuleType, results: dict[str, Path], out: Path, *only: str) -> int:
    argv = ["--plain", str(results["plain"]), "--ntlm", str(results["ntlm"]), "--out-dir", str(out)]
    for suite in only:
        argv += ["--only", suite]
    return int(charts.main(argv))


def test_charts_writes_pngs_of_readme_width(
    charts: ModuleType, results: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "img"
    assert draw(charts, results, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bench-ntlm.png", "bench-plain.png"]
    # Three clients and the "failed requests" entry: the legend wraps to a second row of
    # three, which the chart grows by (its plot area stays the same height).
    assert png_size(out / "bench-plain.png") == (900, 522)
    assert png_size(out / "bench-ntlm.png") == (900, 800)  # two server modes


def test_charts_only_draws_the_suite_asked_for(
    charts: ModuleType, results: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "img"
    assert draw(charts, results, out, "ntlm") == 0
    assert [p.name for p in out.iterdir()] == ["bench-ntlm.png"]


def test_charts_mark_failures_and_cells_not_run(charts: ModuleType) -> None:
    figure = charts.draw_ntlm(ntlm_results())
    hatched = [
        bar for ax in figure.axes for bar in ax.patches if bar.get_hatch() and bar.get_height()
    ]
    assert len(hatched) == 6  # httpx-ntlm at c=10, 50 and 50/10, in both modes
    labels = [text.get_text() for ax in figure.axes for text in ax.texts]
    assert labels.count("75%\nfailed") == 6  # 150 of 200
    assert labels.count(" not run") == 1

    figure = charts.draw_plain(plain_results())
    (ax,) = figure.axes
    crosses = [line.get_xydata().tolist() for line in ax.lines if line.get_marker() == "X"]
    assert crosses == [[[10.0, 1010.0]]]  # httpx at c=10, the run with errors
    aiohttp = next(line for line in ax.lines if line.get_label() == "aiohttp.ClientSession")
    assert aiohttp.get_xdata().tolist() == [1, 10, 100]  # its c=1,000 run failed


def test_charts_same_results_give_the_same_bytes(
    charts: ModuleType, results: dict[str, Path], tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert draw(charts, results, first) == 0
    assert draw(charts, results, second) == 0
    for name in ("bench-plain.png", "bench-ntlm.png"):
        data = (first / name).read_bytes()
        assert data == (second / name).read_bytes()
        assert b"Software" not in data  # no matplotlib version in the metadata


def test_charts_missing_results_file_is_a_clear_error(
    charts: ModuleType,
    results: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    results["plain"].unlink()
    out = tmp_path / "img"
    assert draw(charts, results, out, "plain") == 1
    err = capsys.readouterr().err
    assert f"{results['plain']}: no such results file" in err
    assert "bench/run --only plain" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"benchmark": "plain-get", "config": ', "not valid JSON"),
        ("", "not valid JSON"),
        ('["a", "list"]', "not plain benchmark results"),
        ('{"benchmark": "ntlm"}', "not plain benchmark results (\"benchmark\" is 'ntlm'"),
        ('{"benchmark": "plain-get", "generated": "today"}', "not shaped like plain results"),
    ],
)
def test_charts_garbled_results_file_is_a_clear_error(
    charts: ModuleType,
    results: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    results["plain"].write_text(content)
    with pytest.raises(charts.ResultsError, match="^" + re.escape(str(results["plain"]))) as caught:
        charts.write_chart("plain", results["plain"], tmp_path / "img")
    assert message in str(caught.value)
    assert draw(charts, results, tmp_path / "img", "plain") == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "img" / "bench-plain.png").exists()


def test_charts_has_a_colour_for_every_client_the_suites_measure(charts: ModuleType) -> None:
    # A client without one stops bench/run at its charts, after the whole measured run.
    suites = set(charts.plain.CLIENTS) | set(charts.ntlm.CLIENTS)
    assert sorted(suites - set(charts.COLOURS)) == []
