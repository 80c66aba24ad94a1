"""The two drivers of the one handshake: the sync one (``httpx.Client``, ExSyncClient) runs
the provider calls inline, the async one in a worker thread. Both hand a provider's failure
back to the handshake, which raises it as AuthenticationError. Driven on
``httpx.MockTransport`` (the auth is a plain ``httpx.Auth``); Kerberos reaches no KDC here
(tests/conftest.py isolates it), so getting a ticket fails."""

from __future__ import annotations

import base64

import httpx
import pytest

from httpx_extensions import CONN_ID, AuthenticationError, NegotiateAuth, NTLMAuth

from .servers.ntlm import ntlm_message_type

OFFER_NEGOTIATE = {"WWW-Authenticate": "Negotiate"}


def _refusing(seen: list[str | None]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(401, headers=OFFER_NEGOTIATE)

    return httpx.MockTransport(handler)


def _kerberos() -> NegotiateAuth:
    return NegotiateAuth("alice@EXAMPLE.TEST", "Passw0rd", allow_ntlm=False)


def test_auth_sync_driver_raises_a_provider_failure_as_authentication_error() -> None:
    seen: list[str | None] = []
    with (
        httpx.Client(transport=_refusing(seen), auth=_kerberos()) as client,
        pytest.raises(
            AuthenticationError, match=r"^could not set up kerberos for example\.test: "
        ) as caught,
    ):
        client.get("http://example.test/")
    assert caught.value.__cause__ is not None
    assert seen == [None]  # no token went out


@pytest.mark.anyio
async def test_auth_async_driver_raises_a_provider_failure_as_authentication_error() -> None:
    seen: list[str | None] = []
    async with httpx.AsyncClient(transport=_refusing(seen), auth=_kerberos()) as client:
        with pytest.raises(
            AuthenticationError, match=r"^could not set up kerberos for example\.test: "
        ) as caught:
            await client.get("http://example.test/")
    assert caught.value.__cause__ is not None
    assert seen == [None]


def test_auth_sync_driver_restarts_a_handshake_on_the_new_connection() -> None:
    # As tests/test_auth_origin.py does for the async driver: the first leg comes back from
    # another connection with a fresh offer, and the handshake starts over there.
    answers = [(401, 1), (401, 2), (200, 2)]
    types: list[int | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        value = request.headers.get("Authorization")
        types.append(ntlm_message_type(base64.b64decode(value[5:])) if value else None)
        status, conn_id = answers[len(types) - 1]
        headers = {"WWW-Authenticate": "NTLM"} if status == 401 else {}
        return httpx.Response(status, headers=headers, extensions={CONN_ID: conn_id})

    auth = NTLMAuth("EXAMPLE\\alice", "Passw0rd")
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        response = client.get("http://example.test/")
    assert response.status_code == 200
    assert types == [None, 1, 1]
