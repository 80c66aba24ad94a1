"""A login the server rejects returns the final 401, once, for both auth classes and every way
a server says no: IIS's fresh offers, and the SPNEGO reject token Apache mod_auth_gssapi sends
(``IISLikeServer(spnego_reject=True)``). ``probe`` reports it as rejected credentials with the
mechanism that was tried. Malformed answers stay AuthenticationError (tests/test_auth.py
fuzzes them)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import spnego
from click.testing import CliRunner
from spnego._spnego import NegTokenResp, unpack_token

from httpx_extensions import ExClient, NegotiateAuth, NTLMAuth
from httpx_extensions._auth import _spnego_neg_state
from httpx_extensions._cli._app import PASSWORD_ENV, cli

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file

pytestmark = pytest.mark.anyio

USERS = [("EXAMPLE", "alice", "Passw0rd")]
ALICE = "EXAMPLE\\alice"
# What mod_auth_gssapi sends: NegTokenResp { negState reject }, DER a1 07 30 05 a0 03 0a 01 02.
REJECT_HEADER = "Negotiate oQcwBaADCgEC"


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("reject") / "users.txt", USERS)


@pytest.fixture(params=[False, True], ids=["iis", "apache"])
def spnego_reject(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def iis(user_file: Path, spnego_reject: bool) -> Iterator[IISLikeServer]:
    # mod_auth_gssapi offers Negotiate only; NTLMAuth then sends raw NTLM under it.
    schemes = ("Negotiate",) if spnego_reject else ("Negotiate", "NTLM")
    with IISLikeServer(user_file=user_file, schemes=schemes, spnego_reject=spnego_reject) as srv:
        yield srv
    assert srv.errors == []


def auth_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "httpx_extensions.auth"]


@pytest.mark.parametrize("auth_class", [NTLMAuth, NegotiateAuth])
async def test_auth_rejection_wrong_password_returns_the_final_401_once(
    iis: IISLikeServer,
    spnego_reject: bool,
    auth_class: type[NTLMAuth] | type[NegotiateAuth],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="httpx_extensions.auth")
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=auth_class(ALICE, "wrong"))
        assert response.status_code == 401
        # anonymous 401, NTLM type 1 -> challenge, type 3 -> the final no; nothing after it
        assert [(r.ntlm_message, r.status) for r in iis.log] == [(None, 401), (1, 401), (3, 401)]
        assert len({r.conn_seq for r in iis.log}) == 1
        final = response.headers.get_list("WWW-Authenticate")
        assert final == ([REJECT_HEADER] if spnego_reject else ["Negotiate", "NTLM"])
        assert_pool_clean(client)
    rejected = [m for m in auth_records(caplog) if "credentials rejected" in m]
    assert len(rejected) == 1
    reason = "SPNEGO reject token" if spnego_reject else "401 without a token"
    assert reason in rejected[0]
    assert "mechanism ntlm" in rejected[0]
    assert not any("oQcw" in m or "TlRM" in m for m in auth_records(caplog))


async def test_auth_rejection_then_the_right_password_on_the_same_client(
    iis: IISLikeServer,
) -> None:
    # The rejected connection is not poisoned for the next login (a new flow, a new context).
    async with ExClient() as client:
        assert (
            await client.get(iis.url + "/", auth=NegotiateAuth(ALICE, "wrong"))
        ).status_code == 401
        good = await client.get(iis.url + "/", auth=NegotiateAuth(ALICE, "Passw0rd"))
        assert good.status_code == 200
        assert good.json()["user"] == ALICE
        assert_pool_clean(client)


@pytest.mark.parametrize(
    ("token", "state"),
    [
        (bytes.fromhex("a1073005a0030a0102"), 2),  # reject, as mod_auth_gssapi sends it
        (bytes.fromhex("a1073005a0030a0100"), 0),  # accept-completed
        # long-form lengths: reject followed by a 200-byte responseToken
        (
            bytes.fromhex("a181d43081d1a0030a0102a281c90481c6") + b"\x00" * 0xC6,
            2,
        ),
        (b"NTLMSSP\x00\x02\x00\x00\x00", None),
        (b"\xa1", None),
        (b"\xa1\x07\x30\x05\xa0\x03\x0a\x01", None),  # truncated before the state
        (b"", None),
    ],
)
def test_auth_rejection_neg_state_parser(token: bytes, state: int | None) -> None:
    assert _spnego_neg_state(token) == state


def test_auth_rejection_neg_state_of_a_real_acceptor_challenge(
    user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NTLM_USER_FILE", str(user_file))
    # A real SPNEGO acceptor's answer to NTLM's first leg (long-form lengths), read by
    # pyspnego's own parser as the reference: not a reject.
    client = spnego.client("EXAMPLE\\alice", "Passw0rd", protocol="negotiate")
    server = spnego.server(protocol="negotiate")
    challenge = server.step(client.step())
    assert challenge is not None
    assert len(challenge) > 127
    reference = unpack_token(challenge)
    assert isinstance(reference, NegTokenResp)
    assert _spnego_neg_state(challenge) == int(reference.neg_state) != 2


# -- probe -----------------------------------------------------------------------------------


def test_auth_rejection_probe_says_credentials_rejected_with_the_mechanism(
    iis: IISLikeServer,
) -> None:
    result = CliRunner().invoke(
        cli, ["probe", "--json", iis.url + "/", "--user", ALICE], env={PASSWORD_ENV: "wrong"}
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["error"].startswith("credentials rejected (ntlm via Negotiate): ")
    assert report["mechanism"] == "ntlm"
    assert report["reason"].startswith("NTLM fallback: ")
    assert [leg["status"] for leg in report["legs"]] == [401, 401, 401]
    assert "oQcw" not in result.output

    text = CliRunner().invoke(
        cli, ["probe", iis.url + "/", "--user", ALICE], env={PASSWORD_ENV: "wrong"}
    )
    assert text.exit_code == 1, text.output
    assert "mechanism        NTLM inside Negotiate" in text.output
    assert "no NTLM either" not in text.output
    assert "error            credentials rejected (ntlm via Negotiate)" in text.output


def test_auth_rejection_probe_forced_ntlm_names_the_scheme_only_when_it_differs(
    iis: IISLikeServer, spnego_reject: bool
) -> None:
    result = CliRunner().invoke(
        cli, ["probe", "--json", iis.url + "/", "--user", ALICE, "--ntlm"], env={PASSWORD_ENV: "x"}
    )
    assert result.exit_code == 1, result.output
    tried = "ntlm via Negotiate" if spnego_reject else "ntlm"
    assert json.loads(result.stdout)["error"].startswith(f"credentials rejected ({tried}): ")
