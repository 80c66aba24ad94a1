"""More of what the mutation run of ``_auth.py`` (``scripts/mutate auth``) found untested: the
cookies each challenge of a handshake sets, carried to the very next leg (and kept in the
client's jar), and the preemptive token shown in ``response.request``. Against a scripted
loopback peer whose NTLM answers come from a real pyspnego acceptor (tests/test_auth_cov.py)."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest

from httpx_extensions import AuthenticationError, ExClient, ExTransport, NegotiateAuth, NTLMAuth
from httpx_extensions._auth import _AUTH_TRACE

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file
from .test_auth_cov import Reply, Request, ScriptedPeer, ntlm_origin

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(
        tmp_path_factory.mktemp("mut2") / "users.txt", [("EXAMPLE", "alice", "Passw0rd")]
    )


@pytest.fixture
def ntlm_users(user_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The account for the scripted peer's acceptor (pyspnego reads NTLM_USER_FILE)."""
    monkeypatch.setenv("NTLM_USER_FILE", str(user_file))
    return user_file


# -- cookies set by each challenge ------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "type3_cookie", "jar"),
    [
        # A load balancer that sets its affinity cookie on the first 401 and the back end's
        # session cookie on the second: the type 3 carries both.
        ("session=s1", "lb=node7; session=s1", {"lb": "node7", "session": "s1"}),
        # The second 401 moves the affinity: the new value replaces the old one.
        ("lb=node8", "lb=node8", {"lb": "node8"}),
    ],
    ids=["another-cookie", "same-name-new-value"],
)
async def test_auth_mut2_each_challenge_cookie_goes_with_the_next_leg(
    ntlm_users: Path, second: str, type3_cookie: str, jar: dict[str, str]
) -> None:
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        reply = ntlm_origin(request, state)
        if reply.status == 401:
            first = "authorization" not in request.headers
            reply.headers.append(("Set-Cookie", ("lb=node7" if first else second) + "; Path=/"))
        return reply

    with ScriptedPeer(answer) as peer:
        async with ExClient() as client:
            response = await client.get(peer.url + "/app", auth=NTLMAuth(*ALICE))
            assert response.status_code == 200
            assert response.text == "welcome"
            # Both challenges' cookies reached the jar, and the next request sends them.
            assert dict(client.cookies) == jar
            again = await client.get(peer.url + "/app", auth=NTLMAuth(*ALICE))
            assert again.text == "again"
            assert_pool_clean(client)
    assert peer.errors == []
    assert [(r.conn, r.headers.get("cookie")) for r in peer.requests] == [
        (1, None),  # the anonymous request
        (1, "lb=node7"),  # the type 1: the first 401's cookie
        (1, type3_cookie),  # the type 3: the second 401's too
        (1, "; ".join(f"{k}={v}" for k, v in sorted(jar.items()))),  # from the jar
    ]


# -- what response.request shows for a preemptive token ------------------------------------


async def test_auth_mut2_preemptive_token_answered_without_a_login_is_in_response_request(
    ntlm_users: Path,
) -> None:
    # A page that needs no login answers the preemptive type 1 with a 200: that token was the
    # only one sent, and response.request shows it as it went out (the transport added it to
    # the wire on the new connection, after httpx had built the request).
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        return Reply(200, body=b"public")

    trace: list[dict[str, object]] = []
    with ScriptedPeer(answer) as peer:
        async with ExClient() as client:
            response = await client.get(
                peer.url + "/public",
                auth=NTLMAuth(*ALICE, preemptive=True),
                extensions={_AUTH_TRACE: trace},
            )
            assert response.status_code == 200
            assert response.text == "public"
            assert_pool_clean(client)
    assert peer.errors == []
    (seen,) = peer.requests
    sent = seen.headers["authorization"]
    assert sent.startswith("NTLM ")
    assert base64.b64decode(sent[5:])[:9] == b"NTLMSSP\x00\x01"  # a NEGOTIATE message
    assert response.request.headers["Authorization"] == sent
    # No handshake ran: the server asked for none.
    assert [r["event"] for r in trace] == ["choice", "context", "exchange", "done"]


# -- the current user's NTLM credentials --------------------------------------------------------


async def test_auth_mut2_current_user_ntlm_credentials_are_read_for_each_handshake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NegotiateAuth() with no credentials logs on with NTLM_USER_FILE's first account, read
    # when each handshake starts, as pyspnego reads it: a file changed between two
    # handshakes (a rotated account) is used by the next one, even by the same auth object.
    users = [("EXAMPLE", "alice", "Passw0rd"), ("EXAMPLE", "bob", "B0b-pw")]
    files = [
        write_user_file(tmp_path / "alice-first.txt", users),
        write_user_file(tmp_path / "bob-first.txt", users[::-1]),
    ]

    def answer(request: Request, state: dict[str, Any]) -> Reply:
        reply = ntlm_origin(request, state)
        if reply.status == 200 and "acceptor" in state:
            reply.body = state["acceptor"].client_principal.encode()
        return reply

    auth = NegotiateAuth()
    seen = []
    with ScriptedPeer(answer) as peer:
        for user_file in files:  # (the peer's acceptor knows both accounts either way)
            monkeypatch.setenv("NTLM_USER_FILE", str(user_file))
            async with ExClient() as client:  # a new connection: a new handshake
                response = await client.get(peer.url + "/", auth=auth)
                assert response.status_code == 200
                seen.append(response.text)
                assert_pool_clean(client)
    assert peer.errors == []
    assert seen == ["EXAMPLE\\alice", "EXAMPLE\\bob"]


# -- legs pinned to the challenged connection, without ExClient's flows ------------------------


async def test_auth_mut2_legs_pinned_to_the_challenged_connection_under_a_plain_client(
    user_file: Path,
) -> None:
    # A plain httpx.AsyncClient over ExTransport has no flows (no connection reserved for a
    # handshake between its legs): the conn_id the auth puts on each leg is what keeps the
    # handshake on the connection the 401 came on. Here alice's other, already authenticated
    # connection is freed just before the type 1 leg goes out, so it is the pool's most
    # recently idle one: an unpinned leg would go there.
    auth = NTLMAuth(*ALICE)
    held: list[httpx.Response] = []

    async def free_the_other_connection(request: httpx.Request) -> None:
        if "Authorization" in request.headers and held:
            await held.pop().aclose()

    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as iis:
        transport = ExTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(iis.url + "/", auth=auth)).status_code == 200  # conn 1
            # conn 1 busy: alice's next request opens conn 2 and is challenged there.
            held.append(
                await client.send(
                    client.build_request("GET", iis.url + "/"), auth=auth, stream=True
                )
            )
            client.event_hooks["request"] = [free_the_other_connection]
            response = await client.get(iis.url + "/x", auth=auth)
            assert response.status_code == 200
            assert held == []
        assert iis.errors == []
        assert [(r.path, r.conn_seq, r.ntlm_message, r.status) for r in iis.log] == [
            ("/", 1, None, 401),
            ("/", 1, 1, 401),
            ("/", 1, 3, 200),
            ("/", 1, None, 200),  # the held one: conn 1 is authenticated
            ("/x", 2, None, 401),
            ("/x", 2, 1, 401),
            ("/x", 2, 3, 200),
        ]


# -- a challenge that is no NTLM message --------------------------------------------------------


@pytest.mark.parametrize(
    "garbled",
    [b"NTLMSSP\x00\x02\x00\x00\x00garbage", b"not ntlm"],  # pyspnego: ValueError, struct.error
    ids=["truncated-type-2", "no-signature"],
)
async def test_auth_mut2_garbled_challenge_is_an_error_naming_the_host_and_length(
    user_file: Path, garbled: bytes
) -> None:
    # What pyspnego's parser raises on the server's bytes (not a SpnegoError) becomes an
    # AuthenticationError that says the token is malformed and how long it was, with
    # pyspnego's error as its cause; no type 3 goes out.
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        if "authorization" not in request.headers:
            return Reply(401, [("WWW-Authenticate", "NTLM")])
        return Reply(401, [("WWW-Authenticate", "NTLM " + base64.b64encode(garbled).decode())])

    with ScriptedPeer(answer) as peer:
        async with ExClient() as client:
            with pytest.raises(AuthenticationError) as caught:
                await client.get(peer.url + "/", auth=NTLMAuth(*ALICE))
            assert_pool_clean(client)
    assert peer.errors == []
    assert str(caught.value) == (
        f"NTLM token from 127.0.0.1 is malformed or truncated ({len(garbled)} bytes)"
    )
    assert isinstance(caught.value.__cause__, ValueError | struct.error)
    assert len(peer.requests) == 2


# -- none of our schemes offered ----------------------------------------------------------------


@pytest.mark.parametrize(
    "auth", [NegotiateAuth(*ALICE), NTLMAuth(*ALICE)], ids=["negotiate", "ntlm"]
)
async def test_auth_mut2_a_401_offering_only_basic_is_the_answer(auth: Any) -> None:
    # Neither NTLM, Negotiate nor Kerberos offered: no token goes out (NTLM included, though
    # NegotiateAuth may fall back to it: only where the server offers it), and the 401 stands.
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        return Reply(401, [("WWW-Authenticate", 'Basic realm="intranet"')])

    trace: list[dict[str, object]] = []
    with ScriptedPeer(answer) as peer:
        async with ExClient() as client:
            response = await client.get(peer.url + "/", auth=auth, extensions={_AUTH_TRACE: trace})
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == 'Basic realm="intranet"'
            assert_pool_clean(client)
    assert peer.errors == []
    assert [r.headers.get("authorization") for r in peer.requests] == [None]
    assert [r["event"] for r in trace] == ["exchange", "no_scheme"]
