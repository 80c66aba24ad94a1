"""``httpx-extensions probe --proxy`` against the authenticating loopback proxy: the proxy's
407 legs are reported apart from the server's (issues 9 and 13)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from httpx_extensions._cli._app import PASSWORD_ENV, cli
from httpx_extensions.testing import AuthProxy, IISLikeServer, write_user_file

USERS = [("EXAMPLE", "alice", "Passw0rd")]
ALICE = "EXAMPLE\\alice"
TOKEN_MARKERS = ("TlRMTVNT", "YII", "oYI", "Passw0rd")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("cli-proxy") / "users.txt", USERS)


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


@pytest.fixture
def ntlm_proxy(user_file: Path) -> Iterator[AuthProxy]:
    with AuthProxy(user_file=user_file, schemes=("NTLM",)) as proxy:
        yield proxy
    assert proxy.errors == []


def probe(args: list[str], *, exit_code: int = 0, password: str = "Passw0rd") -> Any:
    result = CliRunner().invoke(cli, ["probe", *args], env={PASSWORD_ENV: password})
    assert result.exit_code == exit_code, result.output
    assert not any(marker in result.output for marker in TOKEN_MARKERS), result.output
    return result


def test_cli_probe_proxy_legs_apart_from_the_servers(
    iis: IISLikeServer, ntlm_proxy: AuthProxy
) -> None:
    report = json.loads(
        probe(["--json", iis.url + "/", "--user", ALICE, "--proxy", ntlm_proxy.url]).stdout
    )
    assert report["ok"] is True
    proxy = report["proxy"]
    assert proxy["offered"] == ["NTLM"]
    assert proxy["scheme"] == "NTLM"
    assert proxy["mechanism"] == "ntlm"
    assert [(leg["scheme"], leg["status"]) for leg in proxy["legs"]] == [
        (None, 407),
        ("NTLM", 407),
        ("NTLM", 401),  # the proxy let it through: the server's own 401
        (None, 401),
        (None, 200),
    ]
    assert proxy["legs"][1]["sent_bytes"] > 0
    assert proxy["legs"][1]["received_bytes"] > 0
    assert proxy["persistence"].startswith("persistent")
    # The server's legs, as without a proxy.
    assert [leg["status"] for leg in report["legs"]] == [401, 401, 200]
    assert report["persistence"]["verdict"] == "persistent"
    text = probe([iis.url + "/", "--user", ALICE, "--proxy", ntlm_proxy.url]).stdout
    assert "proxy offered    NTLM (407)" in text
    assert "proxy persists   persistent" in text


def test_cli_probe_proxy_connect_and_a_rejected_login(
    user_file: Path, ca: trustme.CA, ntlm_proxy: AuthProxy, tmp_path: Path
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with IISLikeServer(user_file=user_file, ssl_context=context) as iis:
        args = ["--json", iis.url + "/", "--user", ALICE, "--proxy", ntlm_proxy.url]
        report = json.loads(probe([*args, "--cacert", str(ca_file)]).stdout)
        assert report["ok"] is True
        assert [leg["status"] for leg in report["proxy"]["legs"]] == [407, 407, 200]
        assert report["proxy"]["persistence"].startswith("per tunnel")
        wrong = probe([*args, "--cacert", str(ca_file)], exit_code=1, password="nope")
        failed = json.loads(wrong.stdout)
        assert "ProxyAuthenticationError" in failed["error"]
        assert "rejected the NTLM credentials" in failed["error"]
