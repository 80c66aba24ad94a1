"""Every code example in README.md and docs/*.md runs, against loopback servers only.

The convention (docs/cli.md follows it too):

- Fenced ```` ```python ```` blocks run in document order. The blocks of one file share one
  namespace (``__name__ == "__main__"``). Top-level ``await`` is allowed: such blocks run on
  one event loop per file; the other blocks run outside any loop, so ``asyncio.run()`` works.
- Before a block runs, ``http://intranet.example.com`` and ``https://intranet.example.com``
  (with any path; no port, or the scheme's default one) become the URL of a loopback IIS-like
  server (``httpx_extensions.testing.IISLikeServer``: NTLM and Negotiate, one acceptor per TCP
  connection), at ``localhost``. The HTTPS one uses a certificate from a test CA, which the
  examples trust through ``SSL_CERT_FILE`` (httpx reads it with ``trust_env=True``, the
  default), and requires channel binding.
- ``http://proxy.example.com:3128`` becomes the URL of the suite's loopback proxy
  (``tests/servers/proxy.py``: CONNECT tunnels and forward proxying, to loopback only). A
  file whose examples name it must send at least one request through it.
  Credentials in examples are ``EXAMPLE\\demo`` / ``Demo-Passw0rd``. Where Kerberos can run, a
  loopback KDC (realm ``EXAMPLE.COM``) knows ``demo@EXAMPLE.COM`` with the same password and
  a ticket for it is in the default ccache, so ``NegotiateAuth()`` signs on with Kerberos.
- Any other URL whose host is not loopback fails the file before anything runs, and name
  lookups of other hosts fail while examples run: nothing leaves the machine.
- ``<!-- doc-test: skip reason="..." -->`` on the line before a fence: the block does not
  run; it is reported as a skipped test with that reason (a Python block must still compile).
- Fenced ```` ```console ```` blocks: lines ``$ httpx-extensions ...`` and
  ``$ python -m httpx_extensions ...`` run as ``<this python> -m httpx_extensions ...``, with
  the same URL substitution and ``HTTPX_EXTENSIONS_PASSWORD=Demo-Passw0rd``, and must exit 0
  unless the block is marked ``<!-- doc-test: exit=N -->``. While
  ``httpx_extensions.__main__`` does not exist they are reported as skipped, "CLI not
  present". Other console lines, and ```` ```sh ```` blocks, do not run.
- Python blocks that use ``NegotiateAuth`` are reported as skipped, with the reason, where
  Kerberos cannot run (``scripts/install-kerberos`` installs what it needs).

One test per file (its id is the file's path), so a failure names the file and the line.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import ipaddress
import logging
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme

from .servers import IISLikeServer, LoopbackProxy, write_user_file
from .servers.kdc import LoopbackKDC, kerberos_unavailable

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

USER = ("EXAMPLE", "demo", "Demo-Passw0rd")
REALM = "EXAMPLE.COM"
BLOCK_TIMEOUT = 60.0  # seconds, per block or command

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test:(?P<body>.*?)-->\s*$")
_OPTION = re.compile(r'\s*(?P<key>[a-z]+)(?:=(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"]+)))?')
_PLACEHOLDER = re.compile(
    r"(?P<scheme>https?)://intranet\.example\.com(?::(?P<port>443|80)\b)?(?![\w.:-])"
)
_PROXY_PLACEHOLDER = re.compile(r"http://proxy\.example\.com:3128(?![\w.:-])")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"`<>(){}\\,]*")
_CLI_PREFIXES = (("httpx-extensions",), ("python", "-m", "httpx_extensions"))
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


class DocFormatError(Exception):
    """A malformed fence or doc-test directive."""


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository, e.g. "docs/auth.md"
    line: int  # 1-based line of the opening fence
    lang: str
    code: str  # the content, dedented by the fence's indentation
    skip: str | None = None
    exit: int = 0

    @property
    def first_line(self) -> int:
        return self.line + 1

    def cli_commands(self) -> list[tuple[int, str]]:
        """(line, command) for every ``$ httpx-extensions``/``$ python -m httpx_extensions``
        line of a console block, continuation lines (``\\``) joined."""
        if self.lang != "console":
            return []
        commands: list[tuple[int, str]] = []
        lines = self.code.split("\n")
        index = 0
        while index < len(lines):
            start = index
            text = lines[index]
            while text.endswith("\\") and index + 1 < len(lines):
                index += 1
                text = text[:-1].rstrip() + " " + lines[index].strip()
            index += 1
            if text.startswith("$ "):
                command = text[2:].strip()
                words = command.split()
                if any(tuple(words[: len(p)]) == p for p in _CLI_PREFIXES):
                    commands.append((self.first_line + start, command))
        return commands

    @property
    def runs(self) -> bool:
        """Whether the convention executes anything in this block."""
        return self.lang == "python" or bool(self.cli_commands())


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _parse_directive(body: str, where: str) -> tuple[str | None, int]:
    options: dict[str, str | None] = {}
    position = 0
    body = body.rstrip()
    while position < len(body):
        match = _OPTION.match(body, position)
        if match is None or match.end() == position:
            raise DocFormatError(f"{where}: cannot read doc-test directive {body.strip()!r}")
        value = match["quoted"] if match["quoted"] is not None else match["bare"]
        options[match["key"]] = value
        position = match.end()
    unknown = set(options) - {"skip", "reason", "exit"}
    if unknown:
        raise DocFormatError(f"{where}: unknown doc-test option(s) {sorted(unknown)}")
    skip: str | None = None
    if "skip" in options or "reason" in options:
        if "skip" not in options or options["skip"] is not None or not options.get("reason"):
            raise DocFormatError(f'{where}: write <!-- doc-test: skip reason="why" -->')
        skip = options["reason"]
    exit_code = 0
    if "exit" in options:
        try:
            exit_code = int(options["exit"] or "")
        except ValueError:
            raise DocFormatError(f"{where}: exit= takes a number") from None
    return skip, exit_code


def parse(path: Path, root: Path = ROOT) -> list[Block]:
    """The fenced blocks of a Markdown file, with their doc-test directives."""
    doc = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    pending: tuple[int, str | None, int] | None = None  # directive line, skip, exit
    index = 0
    while index < len(lines):
        text = lines[index]
        directive = _DIRECTIVE.match(text)
        fence = _FENCE.match(text)
        if pending is not None and fence is None:
            raise DocFormatError(
                f"{doc}:{pending[0]}: a doc-test directive must be on the line before a fence"
            )
        if directive is not None:
            skip, exit_code = _parse_directive(directive["body"], f"{doc}:{index + 1}")
            pending = (index + 1, skip, exit_code)
            index += 1
            continue
        if fence is None:
            index += 1
            continue
        indent, ticks = fence["indent"], fence["ticks"]
        info = fence["info"].strip().split()
        close = re.compile(rf"^[ \t]*`{{{len(ticks)},}}\s*$")
        end = index + 1
        while end < len(lines) and not close.match(lines[end]):
            end += 1
        if end == len(lines):
            raise DocFormatError(f"{doc}:{index + 1}: this fence is never closed")
        content = []
        for raw in lines[index + 1 : end]:
            content.append(raw[len(indent) :] if raw.startswith(indent) else raw.lstrip())
        skip, exit_code = (pending[1], pending[2]) if pending is not None else (None, 0)
        pending = None
        blocks.append(
            Block(
                doc=doc,
                line=index + 1,
                lang=info[0].lower() if info else "",
                code="\n".join(content),
                skip=skip,
                exit=exit_code,
            )
        )
        index = end + 1
    if pending is not None:
        raise DocFormatError(f"{doc}:{pending[0]}: a doc-test directive must precede a fence")
    return blocks


def _cli_present() -> bool:
    try:
        return importlib.util.find_spec("httpx_extensions.__main__") is not None
    except ImportError:
        return False


def skip_reason(block: Block) -> str | None:
    """Why a block that would run is skipped here, or None when it runs."""
    if block.skip is not None:
        return block.skip
    if block.cli_commands() and not _cli_present():
        return "CLI not present"
    if block.lang == "python" and "NegotiateAuth" in block.code:
        reason = kerberos_unavailable()
        if reason is not None:
            return f"Kerberos cannot run here: {reason}"
    return None


def _skipped_blocks() -> list[Any]:
    params = []
    for path in DOCS:
        try:
            blocks = parse(path)
        except DocFormatError:
            continue  # test_doc_examples reports it
        for block in blocks:
            if block.runs and (reason := skip_reason(block)) is not None:
                params.append(pytest.param(block, reason, id=f"{block.doc}:{block.line}"))
    return params


# -- what the examples run against -----------------------------------------------------------


def substitute(text: str, urls: dict[str, str]) -> str:
    """The placeholder origins (also spelt with their default port) -> the loopback servers."""

    def origin(match: re.Match[str]) -> str:
        default = {"http": "80", "https": "443"}[match["scheme"]]
        if match["port"] not in (None, default):
            return match.group()  # another port: left for the off-machine check to report
        return urls[match["scheme"]]

    if "proxy" in urls:
        text = _PROXY_PLACEHOLDER.sub(urls["proxy"], text)
    return _PLACEHOLDER.sub(origin, text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def off_machine_urls(text: str) -> list[str]:
    """URLs in ``text`` that could reach something other than this machine."""
    found = []
    for match in _URL.finditer(text):
        url = match.group()
        rest = text[match.end() : match.end() + 1]
        if url.endswith("://") and rest == "{":
            found.append(url + "{...}")  # a host built at run time
            continue
        host = urlsplit(url).hostname or ""  # lower case, no brackets, port or user
        if host and not _is_loopback(host):
            found.append(url)
    return found


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("docs") / "users.txt", [USER])


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("docs-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def kdc() -> Iterator[LoopbackKDC | None]:
    """A loopback realm with demo's ticket in the default ccache, where Kerberos can run.

    Module scope: it owns the process-wide KRB5_* variables until this module is done.
    """
    if kerberos_unavailable() is not None:
        yield None
        return
    with LoopbackKDC(realm=REALM, users={USER[1]: USER[2]}) as realm:
        realm.kinit(USER[1])
        yield realm


@pytest.fixture
def doc_proxy() -> Iterator[LoopbackProxy]:
    with LoopbackProxy() as proxy:
        yield proxy


@pytest.fixture
def intranet(
    kdc: LoopbackKDC | None, user_file: Path, ca: trustme.CA, doc_proxy: LoopbackProxy
) -> Iterator[dict[str, str]]:
    """The placeholder origins, mapped to fresh loopback servers (HTTP, HTTPS, the proxy)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    with (
        IISLikeServer(user_file=user_file) as http,
        IISLikeServer(
            user_file=user_file, ssl_context=context, require_channel_binding=True
        ) as tls,
    ):
        # "localhost": the name the KDC has a service principal for (HTTP/localhost).
        yield {
            "http": f"http://localhost:{http.port}",
            "https": f"https://localhost:{tls.port}",
            "proxy": doc_proxy.url,
        }
        assert http.errors == []
        assert tls.errors == []


@pytest.fixture
def sandbox(ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Environment, logging and name resolution for one file's examples, restored after."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _is_loopback(str(name).lower()):
            raise socket.gaierror(f"doc examples reach loopback only, not {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)

    environ = dict(os.environ)
    manager = logging.Logger.manager
    loggers = {
        name: (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root = (logging.root.level, list(logging.root.handlers))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        for name, logger in list(manager.loggerDict.items()):
            if not isinstance(logger, logging.Logger):
                continue
            level, handlers, propagate, disabled = loggers.get(name, (0, [], True, False))
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.disabled = disabled
        logging.root.setLevel(root[0])
        logging.root.handlers[:] = root[1]


# -- running ---------------------------------------------------------------------------------


def _run_python(block: Block, code: str, namespace: dict[str, Any], loop: Any) -> None:
    # Padding keeps line numbers: a traceback names the doc file and its own line.
    source = "\n" * (block.first_line - 1) + code
    compiled = compile(source, block.doc, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if compiled.co_flags & inspect.CO_COROUTINE:  # it has a top-level await
        coroutine = eval(compiled, namespace)
        loop.run_until_complete(asyncio.wait_for(coroutine, BLOCK_TIMEOUT))
    else:
        exec(compiled, namespace)


def _example_traceback(block: Block, exc: BaseException) -> str:
    """The traceback from the example's own frames on (the harness's are noise)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != block.doc:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def _run_console(block: Block, urls: dict[str, str]) -> None:
    env = dict(os.environ, HTTPX_EXTENSIONS_PASSWORD=USER[2])
    for line, command in block.cli_commands():
        words = shlex.split(substitute(command, urls))
        prefix = next(p for p in _CLI_PREFIXES if tuple(words[: len(p)]) == p)
        argv = [sys.executable, "-m", "httpx_extensions", *words[len(prefix) :]]
        result = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
        if result.returncode != block.exit:
            pytest.fail(
                f"{block.doc}:{line}: `{command}` exited {result.returncode}, "
                f"expected {block.exit}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}",
                pytrace=False,
            )


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_doc_examples(
    doc: Path, intranet: dict[str, str], sandbox: None, doc_proxy: LoopbackProxy
) -> None:
    try:
        blocks = [block for block in parse(doc) if block.runs]
    except DocFormatError as exc:
        pytest.fail(str(exc), pytrace=False)
    runnable = [block for block in blocks if skip_reason(block) is None]
    if not blocks:
        pytest.skip(f"{_rel(doc)}: nothing to run (no python blocks, no CLI console lines)")
    if not runnable:
        pytest.skip(f"{_rel(doc)}: all {len(blocks)} examples skipped (see test_doc_skipped_block)")

    sources = {block: substitute(block.code, intranet) for block in runnable}
    escaping = [
        f"{block.doc}:{block.line}: {url}"
        for block in runnable
        for url in off_machine_urls(
            sources[block]
            if block.lang == "python"
            else substitute("\n".join(c for _, c in block.cli_commands()), intranet)
        )
    ]
    if escaping:
        pytest.fail(
            "examples may only use http(s)://intranet.example.com (or loopback):\n"
            + "\n".join(escaping),
            pytrace=False,
        )

    namespace: dict[str, Any] = {"__name__": "__main__"}
    loop = asyncio.new_event_loop()
    try:
        for block in runnable:
            if block.lang == "console":
                _run_console(block, intranet)
                continue
            try:
                _run_python(block, sources[block], namespace, loop)
            except Exception as exc:
                failure = _example_traceback(block, exc)
            else:
                continue
            pytest.fail(f"{block.doc}:{block.line}: the example failed\n{failure}", pytrace=False)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    if any(_PROXY_PLACEHOLDER.search(block.code) for block in runnable):
        used = doc_proxy.connect_requests + doc_proxy.forwarded_requests
        assert used, f"{_rel(doc)}: an example names the proxy but nothing went through it"


@pytest.mark.parametrize(("block", "reason"), _skipped_blocks())
def test_doc_skipped_block(block: Block, reason: str) -> None:
    """A block that cannot run here is still checked for what can be checked, then skipped."""
    if block.lang == "python":
        compile(block.code, block.doc, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    for _, command in block.cli_commands():
        shlex.split(command)  # balanced quotes
    pytest.skip(f"{block.doc}:{block.line}: {reason}")


# -- the harness itself ----------------------------------------------------------------------


def test_doc_harness_reads_fences_and_directives(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text(
        "Intro\n"
        "```python\nx = 1\n```\n"
        '<!-- doc-test: skip reason="Windows only" -->\n'
        "```python\nimport sspi\n```\n"
        "1. item\n"
        "   ```console\n   $ httpx-extensions probe \\\n     https://intranet.example.com/\n"
        "   output\n   $ ls\n   ```\n"
        "<!-- doc-test: exit=1 -->\n"
        "```console\n$ python -m httpx_extensions probe http://intranet.example.com/x\n```\n"
        "```sh\n$ httpx-extensions demo\n```\n",
        encoding="utf-8",
    )
    blocks = parse(path, root=tmp_path)
    assert [(b.doc, b.line, b.lang, b.skip, b.exit, b.runs) for b in blocks] == [
        ("page.md", 2, "python", None, 0, True),
        ("page.md", 6, "python", "Windows only", 0, True),
        ("page.md", 10, "console", None, 0, True),
        ("page.md", 17, "console", None, 1, True),
        ("page.md", 20, "sh", None, 0, False),
    ]
    assert blocks[2].cli_commands() == [
        (11, "httpx-extensions probe https://intranet.example.com/")
    ]
    assert blocks[3].cli_commands() == [
        (18, "python -m httpx_extensions probe http://intranet.example.com/x")
    ]
    assert skip_reason(blocks[1]) == "Windows only"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<!-- doc-test: skip -->\n```python\n```\n", "skip reason="),
        ('<!-- doc-test: skip reason="x" -->\ntext\n```python\n```\n', "line before a fence"),
        ("<!-- doc-test: retries=2 -->\n```python\n```\n", "unknown doc-test option"),
        ("<!-- doc-test: exit=one -->\n```console\n```\n", "exit= takes a number"),
        ("```python\nx = 1\n", "never closed"),
    ],
)
def test_doc_harness_refuses_malformed_pages(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DocFormatError, match=error):
        parse(path, root=tmp_path)


def test_doc_harness_keeps_examples_on_this_machine() -> None:
    urls = {"http": "http://localhost:1", "https": "https://localhost:2"}
    code = substitute(
        'get("https://intranet.example.com/a?b=1"); get("http://intranet.example.com")\n'
        'get("https://intranet.example.com:8443/"); get("https://intranet.example.com.evil/")\n'
        'log("https://intranet.example.com:443") log("http://intranet.example.com:80/x")',
        urls,
    )
    assert code.startswith('get("https://localhost:2/a?b=1"); get("http://localhost:1")')
    assert code.endswith('log("https://localhost:2") log("http://localhost:1/x")')
    assert off_machine_urls(code) == [
        "https://intranet.example.com:8443/",
        "https://intranet.example.com.evil/",
    ]
    assert off_machine_urls(
        'p = "socks5://user:pw@proxy.example.com:1080"; m = {"all://": t}; u = f"https://{h}/"'
    ) == ["socks5://user:pw@proxy.example.com:1080", "https://{...}"]
    assert off_machine_urls('"http://127.0.0.1:8000/" "http://[::1]:80/" "http://localhost"') == []


def test_doc_readme_examples_run_as_scripts(intranet: dict[str, str], sandbox: None) -> None:
    """Each README example is a whole script: pasted into a file alone, it runs (no top-level
    ``await``, its own imports), as a reader of the wheel's description would try it."""
    blocks = [b for b in parse(ROOT / "README.md") if b.lang == "python"]
    ran = 0
    for block in blocks:
        source = "\n" * (block.first_line - 1) + substitute(block.code, intranet)
        try:
            compiled = compile(source, block.doc, "exec")  # no PyCF_ALLOW_TOP_LEVEL_AWAIT
        except SyntaxError as exc:
            pytest.fail(f"{block.doc}:{block.line}: not a script: {exc}", pytrace=False)
        if skip_reason(block) is not None:
            continue
        try:
            exec(compiled, {"__name__": "__main__"})  # a namespace of its own
        except Exception as exc:
            failure = _example_traceback(block, exc)
            pytest.fail(f"{block.doc}:{block.line}: the script failed\n{failure}", pytrace=False)
        ran += 1
    assert ran >= 1, "no README example ran"
