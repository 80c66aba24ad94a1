"""NegotiateAuth answering the ``Kerberos`` scheme (a raw Kerberos token under
``WWW-Authenticate: Kerberos``, not SPNEGO), against a real pyspnego Kerberos acceptor with the
suite's loopback KDC: the one choice of ``NegotiateAuth._choose`` the IIS-like server, which
offers Negotiate and NTLM only, never makes. In its own module: the KDC owns process-wide
KRB5_* variables while its module runs (see tests/test_kerberos.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import spnego

from httpx_extensions import ExClient, NegotiateAuth

from .conftest import assert_pool_clean
from .test_auth_cov import Reply, Request, ScriptedPeer
from .test_kerberos import ALICE, kdc

__all__ = ["kdc"]  # the fixture, shared with test_kerberos

pytestmark = pytest.mark.anyio


def kerberos_origin(request: Request, state: dict[str, Any]) -> Reply:
    value = request.headers.get("authorization")
    if value is None:
        return Reply(401, [("WWW-Authenticate", "Kerberos")])
    scheme, _, data = value.partition(" ")
    if scheme != "Kerberos":
        return Reply(400, body=scheme.encode())
    acceptor = spnego.server(protocol="kerberos")  # keys from the KDC's keytab (KRB5_KTNAME)
    out = acceptor.step(base64.b64decode(data))
    assert acceptor.complete
    state["user"] = acceptor.client_principal
    final = "Kerberos " + base64.b64encode(out or b"").decode()
    return Reply(200, [("WWW-Authenticate", final)], body=state["user"].encode())


@pytest.mark.usefixtures("kdc")
async def test_auth_cov_kerberos_scheme_is_answered_with_a_raw_kerberos_token() -> None:
    with ScriptedPeer(kerberos_origin) as peer:
        async with ExClient() as client:
            # The AP-REP in the 200's Kerberos token proves the server (mutual auth required).
            auth = NegotiateAuth(hostname="localhost")
            response = await client.get(peer.url + "/", auth=auth)
            assert response.status_code == 200
            assert response.text == ALICE
            assert_pool_clean(client)
    assert peer.errors == []
    sent = [(r.headers.get("authorization") or " ").split(" ")[0] or None for r in peer.requests]
    assert sent == [None, "Kerberos"]
    token = base64.b64decode(peer.requests[1].headers["authorization"].split(" ")[1])
    assert (
        token[:1] == b"\x60"
    )  # a GSS-API InitialContextToken: Kerberos, not SPNEGO's NegTokenInit
    assert b"\x06\x09\x2a\x86\x48\x86\xf7\x12\x01\x02\x02" in token[:20]  # the krb5 mech OID
