"""Kerberos mutual authentication paths of ``_auth.py`` that the mutation run
(``scripts/mutate auth``) found untested: what the server's answer to the AP-REQ carries, or
not, and what the user gets. Against the suite's MIT KDC (tests/test_kerberos.py's fixture)
and a scripted loopback peer (tests/test_auth_cov.py) whose acceptor is a real pyspnego one
with the realm's keytab, so that its answers can be bent the ways a server may bend them."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
import spnego

from httpx_extensions import AuthenticationError, ExClient, NegotiateAuth

from .conftest import assert_pool_clean
from .servers.kdc import LoopbackKDC
from .test_auth_cov import Reply, Request, ScriptedPeer
from .test_kerberos import kdc

__all__ = ["kdc"]  # the fixture, shared with test_kerberos

pytestmark = pytest.mark.anyio

# The realm's service principal is HTTP/localhost; the peer listens on 127.0.0.1.
SPN_HOST = "localhost"
# negState accept-completed and request-mic (RFC 4178 4.2.2), as the DER the acceptor writes.
_ACCEPT_COMPLETED = bytes.fromhex("a0030a0100")
_REQUEST_MIC = bytes.fromhex("a0030a0103")


def kerberos_origin(
    scheme: str, final: Callable[[bytes | None], tuple[int, bytes | None]]
) -> Callable[[Request, dict[str, Any]], Reply]:
    """A one-leg Kerberos origin offering ``scheme``: ``final(out_token)`` gives the status
    and the token of its answer to the AP-REQ (the acceptor's own AP-REP, or another)."""

    def answer(request: Request, state: dict[str, Any]) -> Reply:
        value = request.headers.get("authorization")
        if value is None:
            return Reply(401, [("WWW-Authenticate", scheme)])
        sent, _, data = value.partition(" ")
        assert sent == scheme
        acceptor = spnego.server(protocol=scheme.lower())
        out = acceptor.step(base64.b64decode(data))
        assert acceptor.complete  # the client's AP-REQ is good: alice, logged in
        status, token = final(out)
        headers = [] if token is None else [("WWW-Authenticate", f"{scheme} {_b64(token)}")]
        return Reply(status, headers, body=b"in")

    return answer


def _b64(token: bytes) -> str:
    return base64.b64encode(token).decode()


async def test_auth_mut2_kerberos_final_token_that_does_not_complete_is_an_error(
    kdc: LoopbackKDC,
) -> None:
    # The 200 carries the acceptor's AP-REP, but in a SPNEGO answer asking for one more
    # exchange (negState request-mic), which a 200 leaves no room for: the client's context
    # stays incomplete. The server's identity is not proven; the error names the problem,
    # and the connection the server considers authenticated is not kept.
    def final(out: bytes | None) -> tuple[int, bytes | None]:
        assert out is not None
        assert _ACCEPT_COMPLETED in out
        return 200, out.replace(_ACCEPT_COMPLETED, _REQUEST_MIC, 1)

    with ScriptedPeer(kerberos_origin("Negotiate", final)) as peer:
        async with ExClient() as client:
            for attempt in (1, 2):
                with pytest.raises(AuthenticationError) as caught:
                    await client.get(f"{peer.url}/{attempt}", auth=NegotiateAuth(hostname=SPN_HOST))
                assert_pool_clean(client)
    assert peer.errors == []
    assert str(caught.value) == (
        f"Negotiate mutual authentication with http://127.0.0.1:{peer.port} failed: the "
        "server's 200 carried a final token that did not complete the handshake "
        "(mutual_auth='required'; 'optional' accepts a missing token, 'disabled' skips the "
        "check)"
    )
    # Each attempt: its own connection, the anonymous request and the AP-REQ.
    assert [r.conn for r in peer.requests] == [1, 1, 2, 2]


@pytest.mark.parametrize(
    ("mutual_auth", "error"),
    [
        ("optional", None),
        ("required", "the server's 200 carried no final token to prove its identity"),
    ],
)
async def test_auth_mut2_kerberos_scheme_without_a_final_token(
    kdc: LoopbackKDC, mutual_auth: str, error: str | None
) -> None:
    # A server offering the bare "Kerberos" scheme (raw Kerberos, no SPNEGO) that answers the
    # AP-REQ with a 200 and no AP-REP: accepted when mutual authentication is optional; when
    # it is required, the error says the token is missing (not that one failed to verify).
    peer_answer = kerberos_origin("Kerberos", lambda out: (200, None))
    auth = NegotiateAuth(hostname=SPN_HOST, mutual_auth=mutual_auth)
    with ScriptedPeer(peer_answer) as peer:
        async with ExClient() as client:
            if error is None:
                response = await client.get(peer.url + "/", auth=auth)
                assert (response.status_code, response.text) == (200, "in")
            else:
                with pytest.raises(AuthenticationError, match=error):
                    await client.get(peer.url + "/", auth=auth)
            assert_pool_clean(client)
    assert peer.errors == []
    assert [r.headers.get("authorization", " ").split(" ")[0] for r in peer.requests] == [
        "",
        "Kerberos",
    ]


async def test_auth_mut2_kerberos_400_after_the_login_is_the_answer(kdc: LoopbackKDC) -> None:
    # The login went through, but the request itself is bad: a 400 with no AP-REP. An error
    # status proves nothing either way; the user gets the server's 400, not an
    # AuthenticationError about a missing token, with mutual authentication required.
    peer_answer = kerberos_origin("Negotiate", lambda out: (400, None))
    with ScriptedPeer(peer_answer) as peer:
        async with ExClient() as client:
            response = await client.get(peer.url + "/", auth=NegotiateAuth(hostname=SPN_HOST))
            assert (response.status_code, response.text) == (400, "in")
            assert_pool_clean(client)
    assert peer.errors == []
    assert len(peer.requests) == 2
