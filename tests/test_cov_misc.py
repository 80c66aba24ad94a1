"""Entry points and a public exception, as a user or a tool meets them.

``python -m httpx_extensions._cli._serve`` (the demo's server process) run in this process, an
import of ``httpx_extensions.__main__`` that must not start the command line (pydoc, doc
generators and test collectors import it), and ``AuthenticationError`` raised by a user's own
code without a request.
"""

from __future__ import annotations

import importlib
import io
import json
import runpy
import sys

import httpx
import pytest

from httpx_extensions import AuthenticationError, HTTPXExtensionsError
from httpx_extensions import _cli as cli_package


def test_cov_misc_serve_module_run_as_main_answers_and_exits_at_end_of_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As server_process() starts it: commands on stdin, one JSON line each on stdout.
    # Run afresh: runpy warns when the module is imported already.
    monkeypatch.delitem(sys.modules, "httpx_extensions._cli._serve", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("stats\nreset\n"))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("httpx_extensions._cli._serve", run_name="__main__")
    assert exit_info.value.code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    assert lines[0]["url"].startswith("http://127.0.0.1:")
    zero = {"requests_total": 0, "connections_opened": 0, "handshakes_completed": 0, "errors": 0}
    assert lines[1:] == [zero, zero]


def test_cov_misc_importing_dunder_main_does_not_start_the_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(cli_package, "main", lambda *args, **kwargs: calls.append(args))
    monkeypatch.delitem(sys.modules, "httpx_extensions.__main__", raising=False)
    try:
        module = importlib.import_module("httpx_extensions.__main__")
        assert module.main is not None
        assert calls == []
    finally:
        sys.modules.pop("httpx_extensions.__main__", None)


def test_cov_misc_authentication_error_without_a_request() -> None:
    error = AuthenticationError("NTLM: the server sent a truncated challenge")
    assert isinstance(error, HTTPXExtensionsError)
    assert isinstance(error, httpx.HTTPError)
    assert str(error) == "NTLM: the server sent a truncated challenge"
    with pytest.raises(RuntimeError, match="request property has not been set"):
        error.request  # noqa: B018  (as httpx's errors without one)
    request = httpx.Request("GET", "http://127.0.0.1/")
    assert AuthenticationError("x", request=request).request is request
