"""The command line (``httpx-extensions demo`` / ``probe``), run for real against the
IIS-like server over HTTP and HTTPS (channel binding required), in both server modes."""

from __future__ import annotations

import json
import os
import re
import runpy
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from click.testing import CliRunner, Result

from httpx_extensions import ExClient, NTLMAuth, _auth
from httpx_extensions._cli import _demo, main
from httpx_extensions._cli._app import PASSWORD_ENV, cli
from httpx_extensions._cli._probe import offered_schemes
from httpx_extensions._cli._serve import DEMO_PASSWORD, serve, server_process
from httpx_extensions.testing import IISLikeServer, write_user_file

from .servers import LoopbackProxy, LoopbackServer
from .servers.kdc import LoopbackKDC, kerberos_unavailable

USERS = [("EXAMPLE", "alice", "Passw0rd"), ("", "zoë", "pässwörd")]
ALICE = "EXAMPLE\\alice"
PASSWORD = "Passw0rd"
# Base64 of the NTLMSSP signature and of a SPNEGO token's first bytes: a token in the output
# would show one of them.
TOKEN_MARKERS = ("TlRMTVNT", "YII", "oYI")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("cli") / "users.txt", USERS, store_hashes=True)


def _serve(user_file: Path, **options: Any) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file, **options) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    yield from _serve(user_file)


@pytest.fixture
def iis_per_request(user_file: Path) -> Iterator[IISLikeServer]:
    yield from _serve(user_file, auth_per_request=True)


@pytest.fixture
def iis_https(user_file: Path, ca: trustme.CA) -> Iterator[IISLikeServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    yield from _serve(user_file, ssl_context=context, require_channel_binding=True)


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def invoke(args: list[str], *, password: str | None = PASSWORD, **kwargs: Any) -> Result:
    env = {PASSWORD_ENV: password}
    kwargs.setdefault("env", env)
    return CliRunner().invoke(cli, args, **kwargs)


def probe_json(args: list[str], *, exit_code: int = 0, **kwargs: Any) -> dict[str, Any]:
    result = invoke(["probe", "--json", *args], **kwargs)
    assert result.exit_code == exit_code, result.output
    assert not any(marker in result.output for marker in TOKEN_MARKERS), result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# -- probe: what the report says -------------------------------------------------------------


def test_cli_probe_http_per_connection_reports_legs_and_persistence(iis: IISLikeServer) -> None:
    report = probe_json([iis.url + "/data", "--user", ALICE])
    assert report["offered"] == ["Negotiate", "NTLM"]
    assert report["anonymous_status"] == 401
    assert report["scheme"] == "Negotiate"
    assert report["mechanism"] == "ntlm"
    assert report["reason"].startswith("NTLM fallback: ")
    assert "HTTP/127.0.0.1" in report["kerberos_error"]
    assert report["spn"] == "HTTP/127.0.0.1"
    assert report["channel_binding"] is False
    assert "plain HTTP" in report["channel_binding_detail"]
    legs = report["legs"]
    assert [leg["status"] for leg in legs] == [401, 401, 200]
    assert [leg["scheme"] for leg in legs] == [None, "Negotiate", "Negotiate"]
    assert legs[0]["sent_bytes"] == 0
    assert legs[1]["sent_bytes"] > 0
    assert legs[2]["sent_bytes"] > legs[1]["sent_bytes"]  # type 3 > type 1
    assert legs[1]["received_bytes"] > 0  # the challenge
    assert len({leg["conn_id"] for leg in legs}) == 1
    assert (report["status"], report["round_trips"], report["ok"]) == (200, 3, True)
    persistence = report["persistence"]
    assert persistence["verdict"] == "persistent"
    assert (persistence["status"], persistence["round_trips"]) == (200, 1)
    assert persistence["conn_id"] == legs[0]["conn_id"]
    # What the server saw: the same three legs and one more request on the same connection.
    assert [(r.status, r.conn_seq) for r in iis.log] == [(401, 1), (401, 1), (200, 1), (200, 1)]
    assert [r.token_length > 0 for r in iis.log] == [False, True, True, False]


def test_cli_probe_human_output(iis: IISLikeServer) -> None:
    result = invoke(["probe", iis.url + "/", "--user", ALICE])
    assert result.exit_code == 0, result.output
    output = result.output
    assert "offered          Negotiate, NTLM (anonymous request: 401)" in output
    assert f"credentials      {ALICE} (password from {PASSWORD_ENV})" in output
    assert "mechanism        NTLM inside Negotiate" in output
    assert "SPN              HTTP/127.0.0.1" in output
    legs = re.findall(
        r"^\s+(\d)\s+(no token|Negotiate, (\d+) bytes)\s+(\d{3})\s+(\d+)", output, re.M
    )
    assert [(leg[0], leg[3]) for leg in legs] == [("1", "401"), ("2", "401"), ("3", "200")]
    assert all(int(leg[2]) > 0 for leg in legs[1:])
    assert "result           200 OK after 3 round trips" in output
    assert "persistence      persistent: " in output
    assert PASSWORD not in output
    assert not any(marker in output for marker in TOKEN_MARKERS)


def test_cli_probe_per_request_server_re_challenges(iis_per_request: IISLikeServer) -> None:
    report = probe_json([iis_per_request.url + "/", "--user", ALICE])
    assert [leg["status"] for leg in report["legs"]] == [401, 401, 200]
    persistence = report["persistence"]
    assert persistence["verdict"] == "re-challenges every request"
    assert persistence["status"] == 401
    assert persistence["round_trips"] == 3  # anonymous 401, then a whole handshake
    assert persistence["conn_id"] == report["legs"][0]["conn_id"]


def test_cli_probe_https_sends_channel_binding(iis_https: IISLikeServer, ca_file: str) -> None:
    report = probe_json([iis_https.url + "/", "--user", ALICE, "--cacert", ca_file])
    assert report["channel_binding"] is True
    assert report["channel_binding_detail"].startswith("sent (tls-server-end-point")
    assert [leg["status"] for leg in report["legs"]] == [401, 401, 200]
    assert report["persistence"]["verdict"] == "persistent"
    # The server checked it: the type 3 carried the binding of its certificate.
    assert [r.channel_binding for r in iis_https.log if r.ntlm_message == 3] == ["match"]


def test_cli_probe_https_insecure_still_binds(iis_https: IISLikeServer) -> None:
    report = probe_json([iis_https.url + "/", "--user", ALICE, "--insecure", "--ntlm"])
    assert (report["scheme"], report["mechanism"], report["channel_binding"]) == (
        "NTLM",
        "ntlm",
        True,
    )


def test_cli_probe_https_without_binding_is_rejected(
    iis_https: IISLikeServer, ca_file: str
) -> None:
    result = invoke(
        ["probe", iis_https.url + "/", "--user", ALICE, "--cacert", ca_file, "--no-channel-binding"]
    )
    assert result.exit_code == 1, result.output
    assert "channel binding  not sent: --no-channel-binding" in result.output
    assert "credentials rejected" in result.output


def test_cli_probe_https_untrusted_certificate_fails(iis_https: IISLikeServer) -> None:
    report = probe_json([iis_https.url + "/", "--user", ALICE], exit_code=1)
    assert report["error"].startswith("ConnectError: ")
    assert "CERTIFICATE_VERIFY_FAILED" in report["error"]
    assert report["legs"] == []


def test_cli_probe_wrong_password_exits_1_and_says_credentials_rejected(
    iis: IISLikeServer,
) -> None:
    result = invoke(["probe", iis.url + "/", "--user", ALICE], password="wrong")
    assert result.exit_code == 1, result.output
    assert "credentials rejected" in result.output
    assert "result           401 Unauthorized after 3 round trips" in result.output
    assert "persistence" not in result.output
    assert iis.requests_total == 3  # no retry loop, no persistence probe


def test_cli_probe_forced_ntlm(iis: IISLikeServer) -> None:
    report = probe_json([iis.url + "/", "--user", ALICE, "--ntlm"])
    assert (report["scheme"], report["mechanism"]) == ("NTLM", "ntlm")
    assert report["reason"] == "forced by --ntlm"
    assert report["kerberos_error"] is None  # not even tried
    assert [r.scheme for r in iis.log] == [None, "NTLM", "NTLM", None]


def test_cli_probe_server_without_negotiate(user_file: Path) -> None:
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as server:
        report = probe_json([server.url + "/", "--user", ALICE])
    assert report["offered"] == ["NTLM"]
    assert (report["scheme"], report["mechanism"]) == ("NTLM", "ntlm")
    assert report["reason"] == "NTLM: the server did not offer Negotiate"


def test_cli_probe_kerberos_only_reports_why_it_failed(iis: IISLikeServer) -> None:
    report = probe_json(
        [iis.url + "/", "--user", "alice@EXAMPLE.TEST", "--kerberos", "--spn-host", "web01"],
        exit_code=1,
    )
    assert report["reason"] == "forced by --kerberos (NTLM refused)"
    assert report["spn"] == "HTTP/web01"
    assert report["error"].startswith("AuthenticationError: could not set up kerberos")
    assert report["mechanism"] is None
    assert [leg["status"] for leg in report["legs"]] == [401]


def test_cli_probe_current_user(user_file: Path) -> None:
    # No --user: NegotiateAuth() with the current user's credentials. Kerberos has no ticket
    # here; pyspnego's NTLM takes them from NTLM_USER_FILE, which the server set.
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as server:
        report = probe_json([server.url + "/"], password=None)
    assert report["credentials"].startswith("the current user")
    assert report["mechanism"] == "ntlm"


def test_cli_probe_current_user_without_any_credentials(iis: IISLikeServer) -> None:
    result = invoke(["probe", iis.url + "/"], env={"NTLM_USER_FILE": "", PASSWORD_ENV: None})
    assert result.exit_code == 1, result.output
    assert "mechanism        none: the handshake did not get that far" in result.output
    assert "why              Kerberos not possible, and no NTLM either: " in result.output
    assert "error            AuthenticationError: " in result.output


def test_cli_probe_password_from_the_prompt(iis: IISLikeServer) -> None:
    result = invoke(["probe", iis.url + "/", "--user", ALICE], password=None, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert f"Password for {ALICE}" in result.stderr
    assert PASSWORD not in result.output
    assert "(password from the prompt)" in result.stdout


def test_cli_probe_through_a_proxy(iis: IISLikeServer, proxy: LoopbackProxy) -> None:
    report = probe_json([iis.url + "/", "--user", ALICE, "--proxy", proxy.url])
    assert report["ok"] is True
    assert report["persistence"]["verdict"] == "persistent"


def test_cli_probe_no_auth_needed(server: LoopbackServer) -> None:
    result = invoke(["probe", server.url + "/", "--user", ALICE])
    assert result.exit_code == 0, result.output
    assert "offered          nothing: the anonymous request got 200" in result.output
    assert "result           200 OK after 1 round trip\n" in result.output
    assert "persistence" not in result.output


def test_cli_probe_unsupported_scheme(server: LoopbackServer) -> None:
    report = probe_json([server.url + "/auth", "--user", ALICE], exit_code=1)
    assert report["offered"] == ["Nonce"]
    assert report["scheme"] is None
    assert "offers none of Negotiate, Kerberos, NTLM (it offered: Nonce)" in report["error"]


def test_cli_probe_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = probe_json([f"http://127.0.0.1:{port}/", "--user", ALICE], exit_code=1)
    assert report["error"].startswith("ConnectError")
    assert report["status"] is None


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/status/403", "the server answered 403 Forbidden without asking for authentication"),
        ("/status/500", "the server answered 500 Internal Server Error without asking"),
    ],
)
def test_cli_probe_error_without_a_challenge(server: LoopbackServer, path: str, error: str) -> None:
    report = probe_json([server.url + path, "--user", ALICE], exit_code=1)
    assert report["error"].startswith(error)
    assert report["scheme"] is None
    assert report["offered"] == []


def test_cli_probe_kerberos(user_file: Path, ca: trustme.CA) -> None:
    """With a ticket: Kerberos, one leg; a wrong SPN: NTLM fallback, and Kerberos's reason."""
    reason = kerberos_unavailable()
    if reason is not None:
        pytest.skip(reason)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    with (
        LoopbackKDC(realm="CLI.TEST", users={"carol": "C4rol-pw"}) as kdc,
        IISLikeServer(user_file=user_file) as http,
        IISLikeServer(
            user_file=user_file, ssl_context=context, require_channel_binding=True
        ) as tls,
    ):
        kdc.kinit("carol")
        report = probe_json([f"http://localhost:{http.port}/"], password=None)
        assert (report["scheme"], report["mechanism"]) == ("Negotiate", "kerberos")
        assert report["reason"] == (
            "Kerberos: the server offered it and a ticket for HTTP/localhost was obtained"
        )
        assert report["spn"] == "HTTP/localhost"
        assert [leg["status"] for leg in report["legs"]] == [401, 200]
        assert report["legs"][1]["sent_bytes"] > 0
        assert report["legs"][1]["received_bytes"] > 0  # the AP-REP: mutual authentication
        assert report["persistence"]["verdict"] == "persistent"
        assert [r.mechanism for r in http.log if r.status == 200] == ["kerberos", "kerberos"]

        ca_file = str(kdc.krb5_conf.parent / "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        report = probe_json([f"https://localhost:{tls.port}/", "--cacert", ca_file], password=None)
        assert (report["mechanism"], report["channel_binding"]) == ("kerberos", True)
        assert [r.channel_binding for r in tls.log if r.status == 200] == ["match", None]

        # The SPN the URL does not name: Kerberos fails, NTLM (current user: NTLM_USER_FILE)
        # takes over, and the report says why.
        url = f"http://localhost:{http.port}/"
        report = probe_json([url, "--spn-host", "wrong.cli.test"], password=None)
        assert report["mechanism"] == "ntlm"
        assert report["spn"] == "HTTP/wrong.cli.test"
        assert report["reason"].startswith("NTLM fallback: Kerberos failed for HTTP/wrong.cli.test")
        assert "not found in Kerberos database" in report["reason"]

        result = invoke(["probe", url, "--spn-host", "wrong.cli.test", "--kerberos"], password=None)
        assert result.exit_code == 1
        assert "not found in Kerberos database" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ntlm"], "--ntlm needs --user"),
        (["--user", ALICE, "--ntlm", "--kerberos"], "exclude each other"),
        (["--user", ALICE, "--insecure", "--cacert", __file__], "exclude each other"),
        (["--user", ALICE, "--cacert", __file__], "is not a PEM CA bundle"),
        (["--user", " "], "must not be empty"),
        (["--proxy", "socks9://x"], "is not an http:// or https:// or socks5:// or socks5h:// URL"),
    ],
)
def test_cli_probe_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = invoke(["probe", "http://127.0.0.1:9/", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_probe_bad_url_and_missing_password_exit_2() -> None:
    result = invoke(["probe", "ftp://127.0.0.1/"])
    assert result.exit_code == 2
    assert "is not an http:// or https:// URL" in result.output
    result = invoke(["probe", "http://[::1"])
    assert result.exit_code == 2
    assert "is not a URL" in result.output
    result = invoke(["probe", "http://127.0.0.1:9/", "--user", ALICE], password=None)
    assert result.exit_code == 2
    assert f"no password for {ALICE}: set {PASSWORD_ENV}" in result.output


def test_cli_offered_schemes_keeps_names_only() -> None:
    response = httpx.Response(
        401,
        headers=[
            ("WWW-Authenticate", 'Basic realm="a, b", charset="UTF-8"'),
            ("WWW-Authenticate", "Negotiate"),
            ("WWW-Authenticate", "NTLM TlRMTVNTUAACAAAA, Negotiate"),
        ],
    )
    assert offered_schemes(response) == ["Basic", "Negotiate", "NTLM"]


@pytest.mark.anyio
async def test_cli_auth_trace_records_sizes_never_tokens(iis_per_request: IISLikeServer) -> None:
    auth = NTLMAuth(ALICE, PASSWORD)
    traces: list[list[dict[str, Any]]] = []
    async with ExClient() as client:
        for _ in range(3):
            traces.append([])
            response = await client.get(
                iis_per_request.url, auth=auth, extensions={_auth._AUTH_TRACE: traces[-1]}
            )
            assert response.status_code == 200
        # Without the key, nothing is recorded anywhere.
        assert (await client.get(iis_per_request.url, auth=auth)).status_code == 200
    first, second, third = ([entry["event"] for entry in trace] for trace in traces)
    assert first == ["exchange", "choice", "context", "exchange", "exchange", "done"]
    assert second == first  # it re-challenged: the auth learns it here
    assert third == ["choice", "context", "exchange", "exchange", "done"]  # preemptive
    assert traces[2][0] == {"event": "choice", "scheme": "NTLM", "preemptive": True}
    assert traces[0][2] == {
        "event": "context",
        "protocol": "ntlm",
        "spn": "HTTP/127.0.0.1",
        "channel_binding": False,
    }
    assert traces[0][-1] == {"event": "done", "complete": True, "mechanism": "ntlm"}
    for trace in traces:
        for entry in trace:
            for value in entry.values():
                assert value is None or isinstance(value, (int, bool)) or len(value) < 20


# -- demo ------------------------------------------------------------------------------------


ROW = re.compile(r"^\s*(httpx\.AsyncClient|ExClient)((?:\s+[\d.]+){5})\s*$", re.M)


def table_rows(output: str) -> dict[str, list[float]]:
    """{client: [ok, failed, connections, exchanges/req, ok req/s]} from the demo's table."""
    return {name: [float(v) for v in values.split()] for name, values in ROW.findall(output)}


def test_cli_demo_embedded_server() -> None:
    result = invoke(
        ["demo", "--requests", "200", "--concurrency", "20", "--connections", "5"], password=None
    )
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    ok, failed, connections, exchanges, rate = rows["ExClient"]
    assert (ok, failed) == (200, 0)
    assert 1 <= connections <= 5
    # Each connection costs two extra exchanges (anonymous 401, challenge), then one each.
    assert exchanges == pytest.approx((200 + 2 * connections) / 200, abs=0.006)
    assert rate > 0
    stock_ok, stock_failed, *_ = rows["httpx.AsyncClient"]
    assert stock_ok + stock_failed == 200
    assert "the server's count" in result.output
    assert "ExClient/httpx: " in result.output
    assert "━" not in result.output  # no progress bar off a terminal


def test_cli_demo_progress_bar_on_a_terminal() -> None:
    args = ["demo", "--requests", "30", "--concurrency", "5", "--connections", "2"]
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "0", PASSWORD_ENV: None}
    result = invoke(args, env=terminal)
    assert result.exit_code == 0, result.output
    output = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.output)  # colours, cursor
    assert re.search(r"^ExClient\s+━+ 30/30 0 failed", output, re.M), output
    assert table_rows(output)["ExClient"][:2] == [30, 0]
    result = invoke([*args, "--no-progress"], env=terminal)
    assert "━" not in result.output


def test_cli_demo_against_a_real_server_counts_on_the_client(iis: IISLikeServer) -> None:
    result = invoke(
        [
            "demo",
            "--url",
            iis.url + "/data",
            "--user",
            ALICE,
            "--requests",
            "100",
            "--concurrency",
            "10",
            "--connections",
            "4",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "counted by the client, not the server" in result.output
    rows = table_rows(result.output)
    assert rows["ExClient"][:2] == [100, 0]
    # The clients' counts add up to what the server saw.
    exchanges = sum(round(row[3] * 100) for row in rows.values())
    connections = sum(row[2] for row in rows.values())
    assert exchanges == iis.requests_total
    assert connections == iis.connections_opened


def test_cli_demo_exits_1_when_exclient_fails(iis: IISLikeServer) -> None:
    result = invoke(
        ["demo", "--url", iis.url + "/", "--user", ALICE, "--requests", "10"], password="wrong"
    )
    assert result.exit_code == 1, result.output
    assert "ExClient failures: 10 x HTTP 401" in result.output
    assert "httpx.AsyncClient completed no request successfully" in result.output


def test_cli_demo_counts_exceptions_as_failures() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    result = invoke(["demo", "--url", url, "--user", ALICE, "--requests", "5"])
    assert result.exit_code == 1, result.output
    assert "ExClient failures: 5 x ConnectError" in result.output
    assert table_rows(result.output)["ExClient"][:3] == [0, 5, 0]


def test_cli_demo_server_that_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        return server_process(module="httpx_extensions._cli._no_such_module")

    monkeypatch.setattr(_demo, "server_process", broken)
    result = invoke(["demo", "--requests", "1"])
    assert result.exit_code == 1
    assert "Error: the demo server stopped (exit status 1)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", ALICE], "--user goes with --url"),
        (["--url", "http://127.0.0.1:9/"], "--url needs --user"),
        (["--url", "intranet"], "is not an http:// or https:// URL"),
        (["--requests", "0"], "0 is not in the range x>=1"),
    ],
)
def test_cli_demo_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = invoke(["demo", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


# -- the demo server process -----------------------------------------------------------------


@pytest.mark.anyio
async def test_cli_demo_server_process_counts_and_resets() -> None:
    with server_process() as server:
        auth = NTLMAuth("EXAMPLE\\demo", DEMO_PASSWORD)
        async with ExClient() as client:
            response = await client.get(server.url + "/x", auth=auth)
        assert response.status_code == 200
        stats = server.ask("stats")
        assert (stats["requests_total"], stats["connections_opened"]) == (3, 1)
        assert stats["handshakes_completed"] == 1
        assert server.ask("reset")["requests_total"] == 0
        with pytest.raises(RuntimeError, match="unknown command 'bogus'"):
            server.ask("bogus")


def test_cli_demo_serve_answers_over_a_pipe() -> None:
    read_commands, write_commands = os.pipe()
    read_answers, write_answers = os.pipe()
    with (
        open(read_commands, encoding="utf-8") as commands,
        open(write_answers, "w", encoding="utf-8") as out,
        open(write_commands, "w", encoding="utf-8") as to_server,
        open(read_answers, encoding="utf-8") as answers,
    ):
        thread = threading.Thread(target=serve, args=(commands, out))
        thread.start()
        url = json.loads(answers.readline())["url"]
        with httpx.Client() as client:
            assert client.get(url + "/").status_code == 401
        to_server.write("stats\n")
        to_server.flush()
        assert json.loads(answers.readline())["requests_total"] == 1
        to_server.write("reset\n")
        to_server.flush()
        assert json.loads(answers.readline())["requests_total"] == 0
        to_server.write("bogus\n")
        to_server.flush()
        assert json.loads(answers.readline()) == {"error": "unknown command 'bogus' (stats, reset)"}
        to_server.close()
        thread.join(timeout=15)
        assert not thread.is_alive()


def test_cli_demo_server_process_that_does_not_start_is_an_error() -> None:
    with (
        pytest.raises(RuntimeError, match=r"the demo server stopped \(exit status 1\)"),
        server_process(module="httpx_extensions._cli._no_such_module"),
    ):
        pass


# -- entry points ----------------------------------------------------------------------------


def test_cli_python_dash_m_and_console_script() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "httpx_extensions", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "Usage: python -m httpx_extensions [OPTIONS] COMMAND" in run.stdout
    assert "demo " in run.stdout
    assert "probe " in run.stdout
    for command in ("demo", "probe"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0
        assert "Exit status" in result.output
    from httpx_extensions import __version__

    assert __version__ in CliRunner().invoke(cli, ["--version"]).output


def test_cli_main_says_how_to_install_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "click", None)  # import click -> ImportError
    monkeypatch.delitem(sys.modules, "httpx_extensions._cli._app")
    assert main(["--help"]) == 1
    error = capsys.readouterr().err
    assert (
        "httpx-extensions: the command line needs the 'cli' extra (click is not installed)" in error
    )
    assert "pip install 'httpx-extensions[cli]'" in error


def test_cli_main_reraises_other_import_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # _docs: a module _app imports at once (demo and probe are imported when they run).
    monkeypatch.setitem(sys.modules, "httpx_extensions._cli._docs", None)
    monkeypatch.delitem(sys.modules, "httpx_extensions._cli._app")
    with pytest.raises(ImportError) as error:
        main(["--help"])
    assert error.value.name == "httpx_extensions._cli._docs"


def test_cli_dunder_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m httpx_extensions", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("httpx_extensions", run_name="__main__")
    assert exit_info.value.code == 0
    assert "httpx-extensions, version" in capsys.readouterr().out


def test_cli_main_runs_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--help"], prog_name="hx")
    assert exit_info.value.code == 0
    assert "Usage: hx probe [OPTIONS] URL" in capsys.readouterr().out
