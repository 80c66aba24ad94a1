"""NTLM channel binding over HTTPS and rejected logins, on ExSyncClient.

The async client's tests (tests/test_channel_binding.py, tests/test_auth_rejection.py) with the
sync client: real certificates served by the IIS-like server with Extended Protection
required, the binding in the AUTHENTICATE message checked against RFC 5929 computed by the
test; a TLS-terminating relay refused; a wrong password answered with the final 401, once, for
NTLMAuth and NegotiateAuth, IIS-style and mod_auth_gssapi-style."""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from httpx_extensions import CONN_ID, ExSyncClient, NegotiateAuth, NTLMAuth

from .servers import IISLikeServer
from .test_auth_rejection import ALICE as ALICE_NAME
from .test_auth_rejection import REJECT_HEADER, auth_records, iis, spnego_reject, user_file
from .test_channel_binding import (
    ALICE,
    gss_bindings_md5,
    make_chain,
    ntlm_type,
    relayed,
    sent_channel_binding,
)
from .test_sync_client import assert_pool_clean, in_threads

__all__ = ["iis", "relayed", "spnego_reject", "user_file"]  # fixtures of the async tests


def capture_authorization() -> tuple[list[str], dict[str, list[Callable]]]:  # type: ignore[type-arg]
    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        if "Authorization" in request.headers:
            sent.append(request.headers["Authorization"])

    return sent, {"request": [record]}


# Channel binding.


@pytest.mark.parametrize("signature_hash", ["sha1", "sha256", "sha384"])
def test_sync_channel_binding_follows_rfc_5929_for_the_certificate_served(
    user_file: Path, tmp_path: Path, signature_hash: str
) -> None:
    chain = make_chain(signature_hash)
    digest = hashlib.sha384 if signature_hash == "sha384" else hashlib.sha256  # SHA-1 -> SHA-256
    application_data = b"tls-server-end-point:" + digest(chain.leaf_der).digest()
    sent, hooks = capture_authorization()
    with IISLikeServer(
        user_file=user_file,
        ssl_context=chain.server_context(tmp_path),
        require_channel_binding=True,
    ) as server:
        with ExSyncClient(verify=chain.client_context(), event_hooks=hooks) as client:
            response = client.get(server.url + "/", auth=NTLMAuth(*ALICE))
            assert response.status_code == 200
            assert response.json()["user"] == "EXAMPLE\\alice"
            assert_pool_clean(client)
        assert server.channel_bindings is not None
        assert server.channel_bindings.application_data == application_data
        assert [r.channel_binding for r in server.log if r.ntlm_message == 3] == ["match"]
    assert [ntlm_type(header) for header in sent] == [1, 3]
    assert sent_channel_binding(sent[1]) == gss_bindings_md5(application_data)


def test_sync_channel_binding_from_16_threads_binds_every_connection(
    user_file: Path, tmp_path: Path
) -> None:
    # Each TLS connection is bound to the certificate it saw, whichever thread opened it.
    chain = make_chain("sha256")
    with IISLikeServer(
        user_file=user_file,
        ssl_context=chain.server_context(tmp_path),
        require_channel_binding=True,
    ) as server:
        limits = httpx.Limits(max_connections=6)
        auth = NTLMAuth(*ALICE)
        with ExSyncClient(verify=chain.client_context(), limits=limits, timeout=30) as client:
            responses = in_threads(300, 16, lambda _: client.get(server.url + "/", auth=auth))
            assert [r.status_code for r in responses] == [200] * 300
            assert {r.json()["user"] for r in responses} == {"EXAMPLE\\alice"}
            assert len({r.extensions[CONN_ID] for r in responses}) <= 6
            assert_pool_clean(client)
        bindings = [r.channel_binding for r in server.log if r.ntlm_message == 3]
        assert bindings == ["match"] * server.connections_opened
        assert server.requests_total / 300 <= 1.05, server.requests_total


def test_sync_channel_binding_refused_through_a_tls_terminating_relay(
    relayed: tuple[IISLikeServer, int, ssl.SSLContext],
) -> None:
    server, relay_port, client_context = relayed
    with ExSyncClient(verify=client_context) as client:
        direct = client.get(server.url + "/", auth=NTLMAuth(*ALICE))
        assert direct.status_code == 200
        through_relay = client.get(f"https://127.0.0.1:{relay_port}/", auth=NTLMAuth(*ALICE))
        assert through_relay.status_code == 401  # bound to the relay's certificate
        assert_pool_clean(client)
    assert [r.channel_binding for r in server.log if r.ntlm_message == 3] == ["match", "mismatch"]
    assert [r.user for r in server.log if r.status == 200] == ["EXAMPLE\\alice"]


# Rejected logins.


@pytest.mark.parametrize("auth_class", [NTLMAuth, NegotiateAuth])
def test_sync_auth_rejection_wrong_password_returns_the_final_401_once(
    iis: IISLikeServer,
    spnego_reject: bool,
    auth_class: type[NTLMAuth] | type[NegotiateAuth],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="httpx_extensions.auth")
    with ExSyncClient() as client:
        response = client.get(iis.url + "/", auth=auth_class(ALICE_NAME, "wrong"))
        assert response.status_code == 401
        assert [(r.ntlm_message, r.status) for r in iis.log] == [(None, 401), (1, 401), (3, 401)]
        assert len({r.conn_seq for r in iis.log}) == 1
        final = response.headers.get_list("WWW-Authenticate")
        assert final == ([REJECT_HEADER] if spnego_reject else ["Negotiate", "NTLM"])
        assert_pool_clean(client)
    rejected = [m for m in auth_records(caplog) if "credentials rejected" in m]
    assert len(rejected) == 1
    assert "mechanism ntlm" in rejected[0]


@pytest.mark.parametrize("auth_class", [NTLMAuth, NegotiateAuth])
def test_sync_auth_rejection_from_threads_then_the_right_password(
    iis: IISLikeServer, auth_class: type[NTLMAuth] | type[NegotiateAuth]
) -> None:
    # Wrong and right passwords interleaved in threads: each wrong one gets its 401 and frees
    # its connection; no good login is spoiled by a bad one's connection.
    wrong, right = auth_class(ALICE_NAME, "wrong"), auth_class(ALICE_NAME, "Passw0rd")
    with ExSyncClient(limits=httpx.Limits(max_connections=4), timeout=30) as client:

        def work(i: int) -> tuple[bool, int, str | None]:
            response = client.get(iis.url + "/", auth=wrong if i % 2 else right)
            user = response.json()["user"] if response.status_code == 200 else None
            return bool(i % 2), response.status_code, user

        results = in_threads(80, 8, work)
        assert {(w, s, u) for w, s, u in results} == {(True, 401, None), (False, 200, ALICE_NAME)}
        assert_pool_clean(client)
        good = client.get(iis.url + "/", auth=right)
        assert (good.status_code, good.json()["user"]) == (200, ALICE_NAME)
        assert_pool_clean(client)
    # Each rejected login took exactly its three exchanges; no retry loop.
    rejected_type3 = [r for r in iis.log if r.ntlm_message == 3 and r.status == 401]
    assert len(rejected_type3) == 40
