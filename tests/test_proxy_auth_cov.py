"""The proxy handshake paths the other proxy tests leave out (issue 14, branch coverage of
_proxy_auth.py): credentials that fit none of the offered schemes, URL credentials answering
Digest and Negotiate, a provider that cannot start, a proxy that refuses or garbles its
challenge, one that never lets Digest finish, and NTLM without channel binding to an HTTPS
proxy. Proxies are the loopback AuthProxy (real acceptors) or, for answers no real proxy
gives on purpose, tests/test_auth_cov.py's ScriptedPeer.
"""

from __future__ import annotations

import base64
import secrets
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from httpx_extensions import (
    ExClient,
    ExSyncClient,
    NegotiateAuth,
    NTLMAuth,
    ProxyAuthenticationError,
)
from httpx_extensions.testing import AuthProxy, write_user_file

from .conftest import assert_pool_clean
from .servers import LoopbackServer
from .test_auth_cov import Reply, Request, ScriptedPeer
from .test_sync_client import assert_pool_clean as assert_sync_pool_clean

pytestmark = pytest.mark.anyio

UPN = "alice@EXAMPLE.TEST"  # a Kerberos-shaped name; NTLM logs it on too (empty domain)
USERS = [("EXAMPLE", "alice", "Passw0rd"), ("", UPN, "Passw0rd")]
ALICE = ("EXAMPLE\\alice", "Passw0rd")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("proxy-auth-cov") / "users.txt", USERS)


def legs(proxy: AuthProxy) -> list[tuple[int, str, int, str | None]]:
    return [(r.conn_seq, r.method, r.status, r.scheme) for r in proxy.log]


# -- credentials that answer none of the offers ----------------------------------------------


async def test_proxy_auth_cov_ntlm_credentials_for_a_basic_only_proxy(
    user_file: Path, server: LoopbackServer
) -> None:
    with AuthProxy(user_file=user_file, schemes=("Basic",)) as proxy:
        async with ExClient(proxy=proxy.url, proxy_auth=NTLMAuth(*ALICE)) as client:
            with pytest.raises(ProxyAuthenticationError) as info:
                await client.get(server.url + "/")
            assert_pool_clean(client)
        assert legs(proxy) == [(1, "GET", 407, None)]  # nothing sent it could not check
    error = info.value
    assert (error.reason, error.offered) == ("unsupported_scheme", ("Basic",))
    assert "the proxy credentials given (NTLMAuth) can answer none of the schemes" in str(error)


async def test_proxy_auth_cov_url_credentials_for_an_unknown_scheme(
    server: LoopbackServer,
) -> None:
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        return Reply(407, [("Proxy-Authenticate", 'Bearer realm="sso"')])

    with ScriptedPeer(answer) as peer:
        url = peer.url.replace("http://", "http://EXAMPLE%5Calice:Passw0rd@")
        async with ExClient(proxy=url) as client:
            with pytest.raises(ProxyAuthenticationError) as info:
                await client.get(server.url + "/")
            assert_pool_clean(client)
    assert peer.errors == []
    assert [r.headers.get("proxy-authorization") for r in peer.requests] == [None]
    error = info.value
    assert (error.reason, error.offered) == ("unsupported_scheme", ("Bearer",))
    assert "(a user and password) can answer none" in str(error)
    assert "Passw0rd" not in str(error)


# -- URL credentials, answered with what the proxy offers ------------------------------------


async def test_proxy_auth_cov_url_credentials_answer_digest(
    user_file: Path, server: LoopbackServer
) -> None:
    with AuthProxy(user_file=user_file, schemes=("Digest",)) as proxy:
        url = proxy.url.replace("http://", "http://EXAMPLE%5Calice:Passw0rd@")
        async with ExClient(proxy=url) as client:
            assert (await client.get(server.url + "/")).status_code == 200
            assert (await client.get(server.url + "/")).status_code == 200
            assert_pool_clean(client)
        # Once Digest was seen, the next request answers at once with the shared challenge.
        assert legs(proxy) == [
            (1, "GET", 407, None),
            (1, "GET", 200, "Digest"),
            (1, "GET", 200, "Digest"),
        ]
        assert {r.user for r in proxy.log if r.status == 200} == {"EXAMPLE\\alice"}


async def test_proxy_auth_cov_url_credentials_with_a_principal_answer_negotiate(
    user_file: Path, server: LoopbackServer
) -> None:
    # user@REALM can be Kerberos, so Negotiate (the strongest offer) is answered; with no
    # KDC for the realm, SPNEGO carries NTLM, which the proxy takes.
    with AuthProxy(user_file=user_file, schemes=("Negotiate", "NTLM")) as proxy:
        url = proxy.url.replace("http://", "http://alice%40EXAMPLE.TEST:Passw0rd@")
        async with ExClient(proxy=url) as client:
            assert (await client.get(server.url + "/")).status_code == 200
            assert_pool_clean(client)
        assert {r.scheme for r in proxy.log} == {None, "Negotiate"}
        passed = [(r.user, r.mechanism) for r in proxy.log if r.handshake]
        assert passed == [(UPN, "ntlm")]


# -- a provider that cannot start ------------------------------------------------------------


def test_proxy_auth_cov_kerberos_that_cannot_start_is_a_provider_error_sync(
    user_file: Path, server: LoopbackServer
) -> None:
    pytest.importorskip("gssapi")
    auth = NegotiateAuth("alice@NOWHERE.TEST", "pw", allow_ntlm=False)
    with AuthProxy(user_file=user_file, schemes=("Negotiate",)) as proxy:
        with ExSyncClient(proxy=proxy.url, proxy_auth=auth) as client:
            with pytest.raises(ProxyAuthenticationError) as info:
                client.get(server.url + "/")
            assert_sync_pool_clean(client)
        assert legs(proxy) == [(1, "GET", 407, None)]
    assert info.value.reason == "provider"
    assert "could not set up kerberos for 127.0.0.1" in str(info.value)


async def test_proxy_auth_cov_kerberos_that_cannot_start_is_a_provider_error(
    user_file: Path, server: LoopbackServer
) -> None:
    pytest.importorskip("gssapi")
    auth = NegotiateAuth("alice@NOWHERE.TEST", "pw", allow_ntlm=False)
    with AuthProxy(user_file=user_file, schemes=("Negotiate",)) as proxy:
        async with ExClient(proxy=proxy.url, proxy_auth=auth) as client:
            with pytest.raises(ProxyAuthenticationError) as info:
                await client.get(server.url + "/")
            assert_pool_clean(client)
        assert legs(proxy) == [(1, "GET", 407, None)]
    assert info.value.reason == "provider"
    assert "could not set up kerberos for 127.0.0.1" in str(info.value)


# -- a proxy that refuses or garbles its challenge -------------------------------------------


@pytest.mark.parametrize(
    ("challenge", "reason", "says"),
    [
        ("NTLM", "rejected", "it rejected the NTLM credentials"),
        ("NTLM !!not-base64!!", "rejected", "it rejected the NTLM credentials"),
        (
            "NTLM " + base64.b64encode(b"NTLMSSP\x00\x02\x00\x00\x00garbage").decode(),
            "provider",
            "malformed or truncated",
        ),
    ],
    ids=["bare", "not-base64", "garbled"],
)
async def test_proxy_auth_cov_answer_to_the_negotiate_leg_that_is_no_challenge(
    server: LoopbackServer, challenge: str, reason: str, says: str
) -> None:
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        if "proxy-authorization" not in request.headers:
            return Reply(407, [("Proxy-Authenticate", "NTLM")])
        return Reply(407, [("Proxy-Authenticate", challenge)])

    with ScriptedPeer(answer) as peer:
        async with ExClient(proxy=peer.url, proxy_auth=NTLMAuth(*ALICE)) as client:
            with pytest.raises(ProxyAuthenticationError) as info:
                await client.get(server.url + "/")
            assert_pool_clean(client)
    assert peer.errors == []
    assert len(peer.requests) == 2  # one NEGOTIATE message, no loop
    assert {r.conn for r in peer.requests} == {1}
    assert (info.value.reason, info.value.offered) == (reason, ("NTLM",))
    assert says in str(info.value)


# -- a Digest handshake that never ends -----------------------------------------------------


async def test_proxy_auth_cov_digest_with_a_new_nonce_every_time_stops_after_8_legs(
    server: LoopbackServer,
) -> None:
    # Each 407 offers a fresh nonce, which earns one more try: the cap ends it.
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        nonce = secrets.token_hex(8)
        return Reply(
            407, [("Proxy-Authenticate", f'Digest realm="r", nonce="{nonce}", qop="auth"')]
        )

    with ScriptedPeer(answer) as peer:
        async with ExClient(proxy=peer.url, proxy_auth=httpx.DigestAuth(*ALICE)) as client:
            with pytest.raises(ProxyAuthenticationError, match="did not finish after 8 legs"):
                await client.get(server.url + "/")
            assert_pool_clean(client)
    assert peer.errors == []
    sent = [r.headers.get("proxy-authorization", "") for r in peer.requests]
    assert len(sent) == 8
    assert sent[0] == ""
    assert all(value.startswith("Digest ") for value in sent[1:])


# -- NTLM without channel binding ------------------------------------------------------------


async def test_proxy_auth_cov_https_proxy_without_channel_binding(
    user_file: Path,
    ca: trustme.CA,
    server: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    # channel_binding=False sends no binding, also to an HTTPS proxy: a proxy that does not
    # require one takes the login, one that does refuses it.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    auth = NTLMAuth(*ALICE, channel_binding=False)
    for required in (False, True):
        with AuthProxy(
            user_file=user_file,
            schemes=("NTLM",),
            ssl_context=context,
            require_channel_binding=required,
        ) as proxy:
            async with ExClient(
                proxy=proxy.url, proxy_auth=auth, verify=client_ssl_context
            ) as client:
                if required:
                    with pytest.raises(ProxyAuthenticationError) as info:
                        await client.get(server.url + "/")
                    assert info.value.reason == "rejected"
                else:
                    assert (await client.get(server.url + "/")).status_code == 200
                assert_pool_clean(client)
            assert [r.channel_binding for r in proxy.log if r.ntlm_message == 3] == ["none"]


# -- what probe --proxy records ---------------------------------------------------------------


async def test_proxy_auth_cov_trace_records_the_learnt_scheme_and_closed_connections(
    user_file: Path,
    server: LoopbackServer,
    https_server: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    from httpx_extensions._proxy_auth import _PROXY_TRACE

    with AuthProxy(user_file=user_file, schemes=("NTLM",), close_after_challenge=True) as proxy:
        async with ExClient(
            proxy=proxy.url, proxy_auth=NTLMAuth(*ALICE), verify=client_ssl_context
        ) as client:
            first: list[dict[str, object]] = []
            response = await client.get(server.url + "/", extensions={_PROXY_TRACE: first})
            assert response.status_code == 200
            # The anonymous 407 closed its connection: said so, and the handshake went on
            # a new one.
            assert {"event": "closed"} in first
            assert first[0] == {
                "event": "exchange",
                "method": "GET",
                "scheme": None,
                "sent_bytes": 0,
                "status": 407,
                "received_bytes": 0,
            }
            # A tunnel needs a connection of its own: NTLM, learnt, opens it at once.
            second: list[dict[str, object]] = []
            response = await client.get(https_server.url + "/", extensions={_PROXY_TRACE: second})
            assert response.status_code == 200
            assert second[0] == {"event": "choice", "scheme": "NTLM", "preemptive": True}
            assert {"event": "closed"} not in second
            assert_pool_clean(client)
        assert [(r.method, r.status, r.scheme) for r in proxy.log][-2:] == [
            ("CONNECT", 407, "NTLM"),
            ("CONNECT", 200, "NTLM"),
        ]
