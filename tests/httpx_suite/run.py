"""Run httpx 0.28.1's own AsyncClient tests with ``httpx_extensions.ExClient`` in its place.

Usage (from the project root, with the project's virtualenv):

    python tests/httpx_suite/run.py [extra pytest args...]

On first run it downloads the httpx sdist by name with pip into ``.cache/httpx-suite/``
(git-ignored), checks its sha256, extracts the sdist's ``tests/`` and ``pyproject.toml``
(httpx's own pytest configuration), and installs the missing test dependencies pinned in
``requirements.txt`` into the running interpreter's environment. It then runs pytest on the
AsyncClient tests with ``exclient_plugin`` (the class swap, scope filter and the deselection
list in ``deselected.txt``), prints one summary line and exits non-zero if any selected test
failed or errored. It first checks that README.md lists exactly the tests of deselected.txt;
``run.py --update-readme`` rewrites that list from deselected.txt. Any other arguments are
passed on to pytest. See README.md.

``run.py --sync`` does the same for httpx's sync ``Client`` tests with
``httpx_extensions.ExSyncClient`` in its place (deselections in ``deselected-sync.txt``, their
own list in README.md; ``--sync --update-readme`` rewrites it).
``run.py --httpx2`` runs the same tests on httpx2: a copy of them with ``httpx``/``httpcore``
rewritten to ``httpx2``/``httpcore2`` (word boundaries, as scripts/generate does), first against
stock ``httpx2.AsyncClient`` (the baseline), then with ``httpx_extensions.httpx2.ExClient`` in
its place. It prints both counts and fails if a test that passed on the baseline does not pass
on ours, unless deselected.txt or deselected-httpx2.txt lists it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import typing

HERE = pathlib.Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
CACHE = PROJECT / ".cache" / "httpx-suite"

HTTPX_VERSION = "0.28.1"
SDIST = f"httpx-{HTTPX_VERSION}.tar.gz"
# sha256 of the sdist as published; pip verifies the download, this pins its content.
SDIST_SHA256 = "75e98c5f16b0f35b567856f597f06ff2270a374470a5c2392242528e3e3e42fc"
SUITE_DIR = CACHE / f"httpx-{HTTPX_VERSION}"
READY_MARKER = SUITE_DIR / ".extracted"

REQUIREMENTS = HERE / "requirements.txt"
# The httpx2 mode: the rewritten copy of the tests, and what it deselects on top of
# deselected.txt (nothing today: the file keeps the format, and the runs read it).
HTTPX2_SUITE_DIR = CACHE / f"httpx-{HTTPX_VERSION}-as-httpx2"
HTTPX2_READY_MARKER = HTTPX2_SUITE_DIR / ".rewritten"
HTTPX2_REWRITES = ((re.compile(r"\bhttpx\b"), "httpx2"), (re.compile(r"\bhttpcore\b"), "httpcore2"))
DESELECTED_HTTPX2 = HERE / "deselected-httpx2.txt"
README = HERE / "README.md"
# The mode: "async" (AsyncClient -> ExClient) or "sync" (Client -> ExSyncClient, --sync).
SYNC = "--sync" in sys.argv[1:]
DESELECTED = HERE / ("deselected-sync.txt" if SYNC else "deselected.txt")
_TAG = "deselected-sync" if SYNC else "deselected"
_HOW = "run.py --sync --update-readme" if SYNC else "run.py --update-readme"
README_START = f"<!-- {_TAG}:start (generated from {DESELECTED.name} by {_HOW}) -->"
README_END = f"<!-- {_TAG}:end -->"

# httpx's conftest starts uvicorn on its default address and waits for it without a time limit.
SERVER_ADDRESS = ("127.0.0.1", 8000)
# Bound on the whole pytest run (it takes seconds), so a hang cannot eat a CI run.
PYTEST_TIMEOUT = 900

# Test files that can hold AsyncClient tests: every file under tests/client/ with an async
# test, and any other test file naming AsyncClient. The plugin narrows down to single tests.
CLIENT_DIR = "tests/client/"


def log(message: str) -> None:
    print(f"httpx-suite: {message}", flush=True)


def sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sdist() -> pathlib.Path:
    archive = CACHE / SDIST
    if archive.is_file() and sha256(archive) == SDIST_SHA256:
        return archive
    CACHE.mkdir(parents=True, exist_ok=True)
    log(f"downloading the httpx {HTTPX_VERSION} sdist with pip")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--disable-pip-version-check",
                f"httpx=={HTTPX_VERSION}",
                "-d",
                tmp,
            ],
            check=True,
        )
        downloaded = pathlib.Path(tmp) / SDIST
        if not downloaded.is_file():
            sys.exit(f"httpx-suite: pip did not produce {SDIST}")
        found = sha256(downloaded)
        if found != SDIST_SHA256:
            sys.exit(f"httpx-suite: {SDIST} has sha256 {found}, expected {SDIST_SHA256}")
        os.replace(downloaded, archive)
    return archive


def extract(archive: pathlib.Path) -> None:
    """Extract the sdist's tests/ and pyproject.toml (not the httpx package: the installed
    httpx must be the one under test)."""
    if READY_MARKER.is_file() and READY_MARKER.read_text() == SDIST_SHA256:
        return
    prefix = f"httpx-{HTTPX_VERSION}/"
    wanted = (prefix + "tests/", prefix + "pyproject.toml")
    tmp = pathlib.Path(tempfile.mkdtemp(dir=CACHE))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(wanted)]
            tar.extractall(tmp, members=members, filter="data")
        shutil.rmtree(SUITE_DIR, ignore_errors=True)
        os.replace(tmp / prefix.rstrip("/"), SUITE_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    READY_MARKER.write_text(SDIST_SHA256)
    log(f"extracted tests/ and pyproject.toml of {SDIST}")


def rewrite_for_httpx2() -> None:
    """Copy the extracted tests and pyproject.toml to HTTPX2_SUITE_DIR with httpx and httpcore
    renamed to httpx2 and httpcore2 (httpx2 is httpx 0.28.1's API under those names)."""
    stamp = SDIST_SHA256 + repr([(p.pattern, r) for p, r in HTTPX2_REWRITES])
    if HTTPX2_READY_MARKER.is_file() and HTTPX2_READY_MARKER.read_text() == stamp:
        return
    shutil.rmtree(HTTPX2_SUITE_DIR, ignore_errors=True)
    for path in sorted(SUITE_DIR.rglob("*")):
        if not path.is_file() or path == READY_MARKER:
            continue
        target = HTTPX2_SUITE_DIR / path.relative_to(SUITE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in (".py", ".toml"):
            text = path.read_text(encoding="utf-8")
            for pattern, replacement in HTTPX2_REWRITES:
                text = pattern.sub(replacement, text)
            target.write_text(text, encoding="utf-8")
        else:
            shutil.copyfile(path, target)
    HTTPX2_READY_MARKER.write_text(stamp)
    log(f"rewrote the tests of {SDIST} for httpx2 into {HTTPX2_SUITE_DIR.name}/")


def read_requirements() -> list[tuple[str, str]]:
    pins = []
    for raw in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.\-+]+)", line)
        if match is None:
            sys.exit(f"httpx-suite: requirements.txt: expected 'name==version', got {raw!r}")
        pins.append((match[1], match[2]))
    return pins


def install_missing() -> None:
    """Install the pinned test dependencies that are missing; leave installed ones alone
    (the project pins some of them too, e.g. trio and trustme) but say when versions differ."""
    missing = []
    for name, version in read_requirements():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{name}=={version}")
            continue
        if installed != version:
            log(f"note: {name} {installed} is installed, requirements.txt pins {version}")
    if missing:
        log("installing " + " ".join(missing))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *missing],
            check=True,
        )


def read_deselected() -> list[tuple[str, str]]:
    """``nodeid  # reason`` lines of deselected.txt (the plugin parses the same format)."""
    entries = []
    for raw in DESELECTED.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            nodeid, _, reason = line.partition("  # ")
            entries.append((nodeid.strip(), reason.strip()))
    return entries


def readme_block() -> str:
    lines = [README_START]
    lines += [f"- `{nodeid}`: {reason}" for nodeid, reason in read_deselected()]
    lines.append(README_END)
    return "\n".join(lines)


def check_readme(update: bool) -> bool:
    """Whether README.md lists exactly the tests of deselected.txt (rewriting it if asked)."""
    text = README.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        log(f"README.md has no {README_START!r} ... {README_END!r} block")
        return False
    current = text[start : end + len(README_END)]
    wanted = readme_block()
    if current == wanted:
        return True
    if update:
        README.write_text(text.replace(current, wanted), encoding="utf-8")
        log(f"README.md: deselected list updated from {DESELECTED.name}")
        return True
    log(f"README.md's deselected list differs from {DESELECTED.name}: run {_HOW}")
    return False


def server_port_free() -> bool:
    """Whether uvicorn can bind httpx's test-server address (else its fixture would hang)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(SERVER_ADDRESS)
        except OSError:
            return False
    return True


def test_files() -> list[str]:
    files = []
    for path in sorted((SUITE_DIR / "tests").rglob("test_*.py")):
        relative = path.relative_to(SUITE_DIR).as_posix()
        source = path.read_text(encoding="utf-8")
        if SYNC:
            has_sync = re.search(r"^def test_", source, re.MULTILINE) is not None
            if (relative.startswith(CLIENT_DIR) and has_sync) or "httpx.Client" in source:
                files.append(relative)
            continue
        has_async = re.search(r"^async def test_", source, re.MULTILINE) is not None
        if (relative.startswith(CLIENT_DIR) and has_async) or "AsyncClient" in source:
            files.append(relative)
    return files


def run_pytest(
    suite_dir: pathlib.Path,
    files: list[str],
    extra: list[str],
    partial: bool,
    deselect: pathlib.Path,
    environ: dict[str, str],
) -> tuple[int, dict[str, typing.Any] | None]:
    """Run pytest on ``files`` of ``suite_dir`` with the plugin; (exit code, its results)."""
    results = pathlib.Path(tempfile.mkstemp(prefix="httpx-suite-", suffix=".json")[1])
    env = dict(os.environ, **environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "exclient_plugin",
        "--rootdir",
        str(suite_dir),
        "-c",
        str(suite_dir / "pyproject.toml"),
        f"--httpx-suite-deselect={deselect}",
        f"--httpx-suite-results={results}",
        *(["--httpx-suite-partial"] if partial else []),
        *files,
        *extra,
    ]
    code = 1
    data = None
    try:
        code = subprocess.run(command, cwd=suite_dir, env=env, timeout=PYTEST_TIMEOUT).returncode
        data = json.loads(results.read_text(encoding="utf-8") or "null")
    except subprocess.TimeoutExpired:
        log(f"pytest did not finish within {PYTEST_TIMEOUT} s")
    except (OSError, ValueError):
        pass
    finally:
        results.unlink(missing_ok=True)
    if data is None:
        log(f"pytest exited {code} without results")
    elif code not in (0, 1):
        log(f"pytest exited {code}")
    return code, data


def summarize(data: dict[str, typing.Any], label: str) -> tuple[set[str], set[str]]:
    """Log the counts of one run; return (passed, failed-or-errored) node ids."""
    outcomes = data["outcomes"]
    bad = set(outcomes["failed"]) | set(outcomes["error"]) | set(outcomes["xpassed"])
    passed = set(outcomes["passed"]) - bad
    skipped = set(outcomes["skipped"]) | set(outcomes["xfailed"])
    kind = "Client" if SYNC else "AsyncClient"
    log(f"{label}{data['out_of_scope']} collected tests of these files are not {kind} tests")
    log(
        f"{label}{len(passed)} passed, {len(bad)} failed, {len(skipped)} skipped, "
        f"{data['deselected']} deselected"
    )
    return passed, bad


def combined_deselect() -> pathlib.Path:
    """deselected.txt and deselected-httpx2.txt in one file, for the httpx2 runs."""
    path = CACHE / "deselected-httpx2-combined.txt"
    path.write_text(
        DESELECTED.read_text(encoding="utf-8")
        + "\n"
        + DESELECTED_HTTPX2.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    return path


def main_httpx2(files: list[str], extra: list[str], partial: bool) -> int:
    """Baseline (stock httpx2.AsyncClient), then ours; a baseline pass must pass on ours."""
    try:
        version = importlib.metadata.version("httpx2")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("httpx-suite: httpx2 is not installed in this environment (the dev extra has it)")
    rewrite_for_httpx2()
    deselect = combined_deselect()
    runs = {}
    for label, baseline in (("baseline", "1"), ("ExClient", "0")):
        log(f"httpx2 {version}, {label}: running the rewritten tests")
        code, data = run_pytest(
            HTTPX2_SUITE_DIR,
            files,
            extra,
            partial,
            deselect,
            {"HTTPX_SUITE_FLAVOUR": "httpx2", "HTTPX_SUITE_BASELINE": baseline},
        )
        if data is None:
            return code or 1
        runs[label] = data
    base_passed, base_bad = summarize(runs["baseline"], "httpx2 baseline (httpx2.AsyncClient): ")
    ours_passed, _ours_bad = summarize(runs["ExClient"], "httpx2 ours (ExClient): ")

    def normal(nodeid: str) -> str:  # parametrized ids name the class
        return nodeid.replace("[ExClient-", "[AsyncClient-")

    regressions = sorted({normal(n) for n in base_passed} - {normal(n) for n in ours_passed})
    for nodeid in sorted(base_bad):
        log(f"httpx2 baseline also fails (not counted against ExClient): {nodeid}")
    for nodeid in regressions:
        log(f"FAILED on ExClient, passed on the baseline: {nodeid}")
    log(
        f"httpx2: {len(base_passed)} passed on httpx2.AsyncClient, {len(ours_passed)} on "
        f"ExClient; {len(regressions)} passed on the baseline only"
    )
    return 1 if regressions else 0


def main() -> int:
    extra = [arg for arg in sys.argv[1:] if arg != "--sync"]  # to pytest, but for these
    if extra[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if extra[:1] == ["--update-readme"]:
        return 0 if check_readme(update=True) else 1
    httpx2_mode = "--httpx2" in extra
    extra = [arg for arg in extra if arg != "--httpx2"]
    if not check_readme(update=False):
        return 1

    if not httpx2_mode:
        try:
            httpx_version = importlib.metadata.version("httpx")
        except importlib.metadata.PackageNotFoundError:
            sys.exit("httpx-suite: httpx is not installed in this environment")
        if httpx_version != HTTPX_VERSION:
            sys.exit(
                f"httpx-suite: installed httpx is {httpx_version}, this suite is for "
                f"{HTTPX_VERSION}"
            )

    extract(fetch_sdist())
    install_missing()

    if not server_port_free():
        host, port = SERVER_ADDRESS
        log(f"{host}:{port} is in use; httpx's test server needs it (stop what listens there)")
        return 1
    files = test_files()
    # Test paths among the arguments replace the default files (e.g. tests/test_timeouts.py).
    chosen = [arg for arg in extra if arg.startswith("tests/")]
    partial = bool(chosen)
    if partial:
        extra = [arg for arg in extra if arg not in chosen]
        files = chosen
    if httpx2_mode:
        return main_httpx2(files, extra, partial)
    code, data = run_pytest(
        SUITE_DIR,
        files,
        extra,
        partial,
        DESELECTED,
        {"HTTPX_SUITE_MODE": "sync" if SYNC else "async"},
    )
    if data is None:
        return code or 1
    _passed, bad = summarize(data, "")
    for nodeid in sorted(bad):
        log(f"FAILED {nodeid}")
    if bad or code != 0:
        return code or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
