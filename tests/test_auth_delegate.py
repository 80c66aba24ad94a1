"""``NegotiateAuth(delegate=True)`` forwards the user's TGT to the server (Kerberos
delegation), and by default it does not. Checked at the acceptor: a pyspnego/GSSAPI server
context on the loopback KDC's keytab, answering through ``httpx.MockTransport``, reports
whether it received delegated credentials. Skipped without the MIT tools
(scripts/install-kerberos), as tests/test_kerberos.py is."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
import spnego

from httpx_extensions import NegotiateAuth

from .servers.kdc import LoopbackKDC, kerberos_unavailable

pytestmark = pytest.mark.anyio

REALM = "HTTPX-EXT.TEST"


@pytest.fixture(scope="module")
def kdc() -> Iterator[LoopbackKDC]:
    # Module scope: the KDC owns process-wide KRB5_* variables while it runs (see
    # tests/test_kerberos.py).
    reason = kerberos_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with LoopbackKDC(realm=REALM, users={"alice": "Al1ce-pw"}) as realm:
        realm.kinit("alice")
        yield realm


def _acceptor_transport(acceptors: list[spnego.ContextProxy]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        value = request.headers.get("Authorization")
        if value is None:
            return httpx.Response(401, headers={"WWW-Authenticate": "Negotiate"})
        acceptor = spnego.server(service="HTTP", hostname="localhost", protocol="negotiate")
        acceptors.append(acceptor)
        out = acceptor.step(base64.b64decode(value.partition(" ")[2]))
        assert acceptor.complete
        headers = {"WWW-Authenticate": "Negotiate " + base64.b64encode(out).decode()} if out else {}
        return httpx.Response(200, headers=headers)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("delegate", [True, False])
async def test_auth_negotiate_delegates_the_ticket_only_when_asked(
    kdc: LoopbackKDC, delegate: bool
) -> None:
    acceptors: list[spnego.ContextProxy] = []
    auth = NegotiateAuth(allow_ntlm=False, delegate=delegate)
    async with httpx.AsyncClient(transport=_acceptor_transport(acceptors), auth=auth) as client:
        response = await client.get("http://localhost/")
    assert response.status_code == 200
    (acceptor,) = acceptors
    assert acceptor.negotiated_protocol == "kerberos"
    assert bool(acceptor.context_attr & spnego.ContextReq.delegate) is delegate
