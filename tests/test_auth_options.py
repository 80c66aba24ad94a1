"""The auth switches of NTLMAuth and NegotiateAuth that need no KDC: ``preemptive=`` (counted
in exchanges against the IIS-like server), ``mutual_auth=`` validation and its NTLM rule, no
token in pyspnego's own DEBUG log, and the error when gssapi is missing (in a subprocess that
cannot import it). Kerberos cases are in tests/test_kerberos.py (they need its KDC)."""

from __future__ import annotations

import base64
import logging
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from httpx_extensions import (
    CONN_ID,
    AuthenticationError,
    ExClient,
    MutualAuth,
    NegotiateAuth,
    NTLMAuth,
)
from httpx_extensions._auth import _AUTH_TRACE
from httpx_extensions._extensions import PREEMPTIVE

from .conftest import assert_pool_clean
from .servers import IISLikeServer, LoopbackServer, write_user_file

pytestmark = pytest.mark.anyio

PASSWORD = "Pässw0rd-ßecret"
USERS = [("EXAMPLE", "alice", PASSWORD), ("EXAMPLE", "bob", "hunter2")]
ALICE = ("EXAMPLE\\alice", PASSWORD)
BOB = ("EXAMPLE\\bob", "hunter2")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("options") / "users.txt", USERS)


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def iis_https(user_file: Path, ca: trustme.CA) -> Iterator[IISLikeServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with IISLikeServer(
        user_file=user_file, ssl_context=context, require_channel_binding=True
    ) as server:
        yield server
    assert server.errors == []


AUTHS = {
    "ntlm": lambda **kw: NTLMAuth(*ALICE, **kw),
    "negotiate": lambda **kw: NegotiateAuth(*ALICE, **kw),
}


# -- preemptive ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(AUTHS))
async def test_auth_options_preemptive_saves_the_anonymous_401_on_new_connections_only(
    iis: IISLikeServer, kind: str
) -> None:
    auth = AUTHS[kind](preemptive=True)
    async with ExClient() as client:
        first = await client.get(iis.url + "/one", auth=auth)
        assert first.status_code == 200
        assert first.json()["user"] == ALICE[0]
        # Type 1 went with the first request: 2 exchanges instead of 3.
        assert [(r.ntlm_message, r.status) for r in iis.log] == [(1, 401), (3, 200)]
        assert first.request.headers["Authorization"].startswith(
            "NTLM " if kind == "ntlm" else "Negotiate "
        )

        # The authenticated connection is reused with no token and no handshake.
        second = await client.get(iis.url + "/two", auth=auth)
        assert second.status_code == 200
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]
        assert (iis.log[-1].scheme, iis.log[-1].handshake) == (None, False)
        assert iis.requests_total == 3
        assert iis.handshakes_completed == 1
        assert_pool_clean(client)


async def test_auth_options_preemptive_logs_lengths_only(
    iis: IISLikeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="httpx_extensions.auth")
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE, preemptive=True))
        assert response.status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "httpx_extensions.auth"]
    assert "NTLM preemptive: 40-byte token on a new connection" in messages
    token = response.history[0].request.headers["Authorization"].split()[1]
    assert not any(token in m or "TlRM" in m for m in messages)


async def test_auth_options_without_preemptive_the_first_request_goes_anonymous(
    iis: IISLikeServer,
) -> None:
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert response.status_code == 200
        assert [(r.scheme, r.status) for r in iis.log] == [
            (None, 401),
            ("NTLM", 401),
            ("NTLM", 200),
        ]


async def test_auth_options_preemptive_one_handshake_per_connection_under_concurrency(
    iis: IISLikeServer,
) -> None:
    import anyio

    auth = NTLMAuth(*ALICE, preemptive=True)
    statuses: list[int] = []

    async def worker(jobs: Iterator[int]) -> None:
        for i in jobs:
            statuses.append((await client.get(f"{iis.url}/r/{i}", auth=auth)).status_code)

    async with ExClient(limits=httpx.Limits(max_connections=3)) as client:
        jobs = iter(range(60))
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(worker, jobs)
        assert statuses == [200] * 60
        # One extra exchange (the challenge) per connection, and never an anonymous 401.
        assert iis.handshakes_completed == iis.connections_opened <= 3
        assert iis.requests_total == 60 + iis.connections_opened
        assert not [r for r in iis.log if r.scheme is None and r.status == 401]
        assert_pool_clean(client)


async def test_auth_options_preemptive_identities_stay_apart(iis: IISLikeServer) -> None:
    async with ExClient() as client:
        alice = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE, preemptive=True))
        bob = await client.get(iis.url + "/", auth=NTLMAuth(*BOB, preemptive=True))
        assert (alice.json()["user"], bob.json()["user"]) == (ALICE[0], BOB[0])
        assert alice.extensions[CONN_ID] != bob.extensions[CONN_ID]
        assert iis.requests_total == 4
        assert_pool_clean(client)


async def test_auth_options_preemptive_https_binds_to_the_new_connections_certificate(
    iis_https: IISLikeServer, client_ssl_context: ssl.SSLContext
) -> None:
    async with ExClient(verify=client_ssl_context) as client:
        response = await client.get(iis_https.url + "/", auth=NTLMAuth(*ALICE, preemptive=True))
        assert response.status_code == 200
        assert [(r.ntlm_message, r.status, r.channel_binding) for r in iis_https.log] == [
            (1, 401, None),
            (3, 200, "match"),
        ]


async def test_auth_options_preemptive_scheme_not_offered_falls_back_to_the_handshake(
    user_file: Path,
) -> None:
    # NegotiateAuth opens with Negotiate; a server offering NTLM only refuses it with fresh
    # offers, and the ordinary handshake runs on the same connection.
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as server:
        async with ExClient() as client:
            trace: list[dict[str, object]] = []
            response = await client.get(
                server.url + "/",
                auth=NegotiateAuth(*ALICE, preemptive=True),
                extensions={_AUTH_TRACE: trace},
            )
            assert response.status_code == 200
            assert [(r.scheme, r.status) for r in server.log] == [
                ("Negotiate", 401),
                ("NTLM", 401),
                ("NTLM", 200),
            ]
            assert len({r.conn_seq for r in server.log}) == 1
            assert [e["preemptive"] for e in trace if e["event"] == "choice"] == [True, False]


async def test_auth_options_preemptive_wrong_password_returns_the_401_once(
    iis: IISLikeServer,
) -> None:
    async with ExClient() as client:
        response = await client.get(
            iis.url + "/", auth=NTLMAuth(ALICE[0], "wrong", preemptive=True)
        )
        assert response.status_code == 401
        assert [(r.ntlm_message, r.status) for r in iis.log] == [(1, 401), (3, 401)]


async def test_auth_options_preemptive_token_never_follows_a_redirect(
    server: LoopbackServer, other_server: LoopbackServer
) -> None:
    auth = NTLMAuth(*ALICE, preemptive=True)
    async with ExClient(follow_redirects=True) as client:
        warm = await client.get(server.url + "/", auth=auth)
        assert warm.status_code == 200
        assert server.log[0].authorization is not None  # the preemptive token, as asked
        # The redirecting request reuses that connection (no token), and httpx follows the
        # redirect with a request built from it: it opens a new connection to another host,
        # which must not get a token made for this request.
        response = await client.get(
            server.url + "/redirect", params={"to": other_server.url + "/"}, auth=auth
        )
        assert response.status_code == 200
        assert response.history[0].extensions[CONN_ID] == warm.extensions[CONN_ID]
        assert server.log[1].authorization is None
        assert [r.authorization for r in other_server.log] == [None]
        assert_pool_clean(client)


async def test_auth_options_preemptive_provider_error_sends_nothing_and_frees_the_connection(
    iis: IISLikeServer,
) -> None:
    # Kerberos only, and this suite's Kerberos reaches no KDC: the token cannot be made.
    # The error comes before a byte is written, and the new connection goes back to the pool.
    async with ExClient() as client:
        with pytest.raises(AuthenticationError, match="Negotiate"):
            await client.get(iis.url + "/", auth=NegotiateAuth(allow_ntlm=False, preemptive=True))
        assert iis.log == []
        assert_pool_clean(client)
        response = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert response.status_code == 200


async def test_auth_options_preemptive_under_another_transport_is_inert() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    async with ExClient(transport=httpx.MockTransport(handler)) as client:
        response = await client.get("http://127.0.0.1:9/", auth=NTLMAuth(*ALICE, preemptive=True))
        assert response.status_code == 200
        assert "Authorization" not in seen[0].headers
        assert PREEMPTIVE not in seen[0].extensions  # the hook does not outlive the request


# -- mutual_auth: values and NTLM ------------------------------------------------------------


def test_auth_options_mutual_auth_values() -> None:
    assert NegotiateAuth()._mutual_auth is MutualAuth.REQUIRED  # as requests-kerberos
    assert NTLMAuth(*ALICE)._mutual_auth is MutualAuth.DISABLED
    for value in ("optional", "OPTIONAL", MutualAuth.OPTIONAL):
        assert NegotiateAuth(mutual_auth=value)._mutual_auth is MutualAuth.OPTIONAL
        assert NTLMAuth(*ALICE, mutual_auth=value)._mutual_auth is MutualAuth.OPTIONAL
    for bad in ("always", 1, None, True):
        with pytest.raises(ValueError, match="mutual_auth must be 'required', 'optional' or"):
            NegotiateAuth(mutual_auth=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NTLM does not authenticate the server"):
        NTLMAuth(*ALICE, mutual_auth="required")
    with pytest.raises(TypeError, match="preemptive must be True or False"):
        NTLMAuth(*ALICE, preemptive="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("final_token", ["omit", "corrupt"])
async def test_auth_options_mutual_auth_does_not_apply_to_an_ntlm_fallback(
    user_file: Path, final_token: str
) -> None:
    # NTLM inside SPNEGO: no Kerberos, no server token to require. With the MIC-bearing
    # final token missing the login still succeeds under the default "required".
    with IISLikeServer(user_file=user_file, final_token=final_token) as server:
        async with ExClient() as client:
            auth = NegotiateAuth(*ALICE, mutual_auth="required")
            if final_token == "omit":
                response = await client.get(server.url + "/", auth=auth)
                assert response.status_code == 200
                assert server.log[-1].mechanism == "ntlm"
            else:
                # A final token that is present is checked: a broken mechListMIC is an error.
                with pytest.raises(AuthenticationError, match="Negotiate mutual authentication"):
                    await client.get(server.url + "/", auth=auth)
                disabled = NegotiateAuth(*ALICE, mutual_auth="disabled")
                assert (await client.get(server.url + "/", auth=disabled)).status_code == 200


# -- no token in pyspnego's log ----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(AUTHS))
async def test_auth_options_no_token_in_spnego_debug_log(
    user_file: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An application that turns pyspnego's logger to DEBUG sees no token and no password.
    # auth_per_request: every request is a full handshake, so several tokens go by.
    spnego_logger = logging.getLogger("spnego")
    saved = spnego_logger.level
    spnego_logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    try:
        with IISLikeServer(user_file=user_file, auth_per_request=True) as server:
            async with ExClient() as client:
                for _ in range(2):
                    trace: list[dict[str, object]] = []
                    response = await client.get(
                        server.url + "/", auth=AUTHS[kind](), extensions={_AUTH_TRACE: trace}
                    )
                    assert response.status_code == 200
                    # The tokens as they crossed the wire, from the request and the 401s.
                    sent = [response.request.headers["Authorization"].split()[1]]
                    challenges = [
                        h.split()[1]
                        for r in response.history
                        for h in r.headers.get_list("WWW-Authenticate")
                        if " " in h
                    ]
                    tokens = sent + challenges
                    assert len(challenges) >= 1
    finally:
        spnego_logger.setLevel(saved)
    spnego_records = [r for r in caplog.records if r.name.startswith("spnego")]
    assert any("step input" in r.getMessage() for r in spnego_records)  # it did log
    for record in caplog.records:
        text = record.getMessage()
        for token in tokens:
            assert token not in text
            assert token[:24] not in text
        assert PASSWORD not in text
        assert "TlRMTVNT" not in text  # base64 of any NTLM message's signature


def test_auth_options_spnego_filter_redacts_preformatted_and_argument_tokens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = base64.b64encode(b"NTLMSSP\x00" + bytes(range(40))).decode()
    logger = logging.getLogger("spnego._ntlm")
    caplog.set_level(logging.DEBUG, logger="spnego")
    logger.debug("NTLM step input: %s", token)
    logger.debug(f"SPNEGO step output: {token}")  # pyspnego formats some itself
    logger.debug("Failed to create context for SPNEGO protocol %s: %s", "kerberos", "no KDC")
    messages = [r.getMessage() for r in caplog.records if r.name == "spnego._ntlm"]
    assert messages == [
        f"NTLM step input: <{len(token)} characters redacted>",
        f"SPNEGO step output: <{len(token)} characters redacted>",
        "Failed to create context for SPNEGO protocol kerberos: no KDC",
    ]


def test_auth_options_spnego_filter_passes_a_record_it_cannot_format() -> None:
    from httpx_extensions._auth import _RedactSpnegoTokens

    record = logging.LogRecord("spnego", logging.DEBUG, __file__, 1, "%d tokens", ("x",), None)
    assert _RedactSpnegoTokens().filter(record) is True  # logging reports the bad record itself
    assert (record.msg, record.args) == ("%d tokens", ("x",))


# -- gssapi not installed --------------------------------------------------------------------

_NO_GSSAPI = textwrap.dedent(
    """
    import sys
    sys.modules["gssapi"] = None  # before pyspnego looks for it: as if not installed
    import anyio, httpx
    from httpx_extensions import AuthenticationError, ExClient, NegotiateAuth

    async def main(url, allow_ntlm):
        async with ExClient() as client:
            try:
                await client.get(url, auth=NegotiateAuth(allow_ntlm=allow_ntlm == "1"))
            except AuthenticationError as exc:
                print("ERROR", exc)
            else:
                print("NO ERROR")

    anyio.run(main, *sys.argv[1:])
    """
)


@pytest.mark.parametrize("allow_ntlm", [True, False])
def test_auth_options_missing_gssapi_is_named_with_the_install_command(
    iis: IISLikeServer, allow_ntlm: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NTLM_USER_FILE"}  # no NTLM fallback
    result = subprocess.run(
        [sys.executable, "-c", _NO_GSSAPI, iis.url + "/", "1" if allow_ntlm else "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERROR "), result.stdout
    assert "gssapi package" in result.stdout
    assert "not installed" in result.stdout
    assert 'pip install "httpx-extensions[kerberos]"' in result.stdout
    assert "credential cache" not in result.stdout
    assert [(r.scheme, r.status) for r in iis.log] == [(None, 401)]  # no token went out
