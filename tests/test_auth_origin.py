"""The origin an auth names and keys its memory by (scheme, host, port, the default port filled
in), and a handshake that starts over when its connection is lost between legs.

The handshake-restart cases drive NTLMAuth as a plain ``httpx.Auth`` on ``httpx.MockTransport``:
the mock sets the ``conn_id`` extension the way ExClient's pool does, so a leg can be made to
come back on another connection (or a default port used) with no server at all. The origin
keying is checked against two IIS-like servers on loopback."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from httpx_extensions import CONN_ID, AuthenticationError, ExClient, NTLMAuth
from httpx_extensions._auth import _AUTH_TRACE

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file
from .servers.ntlm import ntlm_message_type

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")


def _ntlm_type(request: httpx.Request) -> int | None:
    value = request.headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    assert scheme == "NTLM"
    return ntlm_message_type(base64.b64decode(token))


def _transport(
    answers: list[tuple[int, dict[str, str], int]], seen: list[int | None]
) -> httpx.MockTransport:
    """Answers the requests in turn with (status, headers, conn_id); records each request's
    NTLM message type (None: no Authorization)."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(_ntlm_type(request))
        status, headers, conn_id = answers[len(seen) - 1]
        return httpx.Response(status, headers=headers, extensions={CONN_ID: conn_id})

    return httpx.MockTransport(handler)


OFFER_NTLM = {"WWW-Authenticate": "NTLM"}


async def test_auth_handshake_restarts_on_the_new_connection_with_a_fresh_context() -> None:
    # The first leg comes back from another connection with a fresh offer: the handshake
    # starts over there with a new type 1, and the trace says so.
    seen: list[int | None] = []
    trace: list[dict[str, object]] = []
    answers = [(401, OFFER_NTLM, 1), (401, OFFER_NTLM, 2), (200, {}, 2)]
    async with httpx.AsyncClient(
        transport=_transport(answers, seen), auth=NTLMAuth(*ALICE)
    ) as client:
        response = await client.get("http://example.test/", extensions={_AUTH_TRACE: trace})
    assert response.status_code == 200
    assert seen == [None, 1, 1]
    assert [record["event"] for record in trace] == [
        "exchange",
        "choice",
        "context",
        "choice",  # the fresh offer on conn_id 2
        "context",  # the new context for it
        "exchange",
        "done",
    ]
    assert trace[-2]["conn_id"] == 2


async def test_auth_handshake_restart_offering_none_of_our_schemes_returns_the_401() -> None:
    seen: list[int | None] = []
    answers = [(401, OFFER_NTLM, 1), (401, {"WWW-Authenticate": 'Basic realm="x"'}, 2)]
    async with httpx.AsyncClient(
        transport=_transport(answers, seen), auth=NTLMAuth(*ALICE)
    ) as client:
        response = await client.get("http://example.test/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="x"'
    assert seen == [None, 1]


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://example.test/", "http://example.test:80"),
        ("https://example.test/", "https://example.test:443"),
        ("http://example.test:8443/", "http://example.test:8443"),
    ],
)
async def test_auth_split_handshake_names_the_origin_with_its_port(url: str, origin: str) -> None:
    # The leg comes back from another connection, and not as a 401: the handshake cannot
    # move, and the error names the origin, its default port written out.
    seen: list[int | None] = []
    answers = [(401, OFFER_NTLM, 1), (200, {}, 2)]
    async with httpx.AsyncClient(
        transport=_transport(answers, seen), auth=NTLMAuth(*ALICE)
    ) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get(url)
    assert str(caught.value).startswith(f"NTLM handshake with {origin} was split: ")
    assert "connection 1 between legs" in str(caught.value)
    assert seen == [None, 1]


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(
        tmp_path_factory.mktemp("origin") / "users.txt", [("EXAMPLE", "alice", "Passw0rd")]
    )


async def test_auth_rechallenging_server_makes_only_its_own_origin_preemptive(
    user_file: Path,
) -> None:
    # Two servers on one host, on two ports: x challenges every request (so the auth goes
    # preemptive for it), y authenticates connections. y's first request stays anonymous.
    auth = NTLMAuth(*ALICE)
    with (
        IISLikeServer(user_file=user_file, schemes=("NTLM",), auth_per_request=True) as x,
        IISLikeServer(user_file=user_file, schemes=("NTLM",)) as y,
    ):
        async with ExClient() as client:
            for _ in range(3):
                assert (await client.get(x.url + "/", auth=auth)).status_code == 200
            assert x.log[-2].ntlm_message == 1  # preemptive: type 1 with the first request
            assert x.log[-2].status == 401
            response = await client.get(y.url + "/", auth=auth)
            assert response.status_code == 200
            assert response.json()["user"] == ALICE[0]
            assert [(r.ntlm_message, r.status) for r in y.log] == [
                (None, 401),
                (1, 401),
                (3, 200),
            ]
            assert_pool_clean(client)
        assert x.errors == []
        assert y.errors == []
