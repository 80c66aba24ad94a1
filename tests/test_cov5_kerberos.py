"""Mutual authentication refuses a server whose final SPNEGO token leaves the handshake open
(issue 14 item 5): the 200 carries the Kerberos AP-REP, but its negState asks for the client's
mechListMIC (request-mic) instead of ending the exchange (accept-completed). pyspnego's
initiator then stays incomplete without an error; a 200 that has not proven the server's
identity must not be taken as proof.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from spnego._spnego import NegState, NegTokenResp, unpack_token

from httpx_extensions import AuthenticationError, ExClient, NegotiateAuth
from httpx_extensions.testing import IISLikeServer, write_user_file
from httpx_extensions.testing._iis import _Exchange

from .conftest import assert_pool_clean
from .servers.kdc import LoopbackKDC, kerberos_unavailable

pytestmark = pytest.mark.anyio


class _AsksForTheMic(_Exchange):
    async def ok(
        self, user: str, scheme: str | None, *, handshake: bool, final_token: bytes | None = None
    ) -> None:
        if final_token:
            completed = unpack_token(final_token)
            assert isinstance(completed, NegTokenResp)
            assert completed.neg_state is NegState.accept_complete
            final_token = NegTokenResp(
                neg_state=NegState.request_mic,
                supported_mech=completed.supported_mech,
                response_token=completed.response_token,
            ).pack()
        await super().ok(user, scheme, handshake=handshake, final_token=final_token)


class _ServerThatAsksForTheMic(IISLikeServer):
    _exchange_type = _AsksForTheMic


@pytest.fixture
def kdc() -> Iterator[LoopbackKDC]:
    reason = kerberos_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with LoopbackKDC(realm="MIC.TEST", users={"erin": "Er1n-pw"}) as kdc:
        kdc.kinit("erin")
        yield kdc


@pytest.mark.parametrize("mutual_auth", ["required", "optional"])
async def test_cov5_kerberos_final_token_that_leaves_the_handshake_open_is_refused(
    kdc: LoopbackKDC, tmp_path: Path, mutual_auth: str
) -> None:
    users = write_user_file(tmp_path / "users.txt", [("", "nobody", "unused")])
    with _ServerThatAsksForTheMic(user_file=users) as server:
        async with ExClient() as client:
            with pytest.raises(AuthenticationError) as info:
                await client.get(
                    f"http://localhost:{server.port}/", auth=NegotiateAuth(mutual_auth=mutual_auth)
                )
            assert_pool_clean(client)
        assert server.handshakes_completed == 1  # the server's side did complete
        assert [r.mechanism for r in server.log if r.status == 200] == ["kerberos"]
        assert server.errors == []
    message = str(info.value)
    assert message.startswith("Negotiate mutual authentication with http://localhost:")
    assert "the server's 200 carried a final token that did not complete the handshake" in message
    assert f"mutual_auth={mutual_auth!r}" in message
