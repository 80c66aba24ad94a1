"""Behaviour that the mutation run of ``_auth.py`` (``scripts/mutate auth``) found untested:
the edges of the SPNEGO negState reader, the identity a connection shows in
``client.connections`` (never the password digest), and the handshake trace of a
``preemptive=True`` request. Against the IIS-like server on loopback where a handshake runs."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import spnego

from httpx_extensions import CONN_ID, AuthenticationError, ExClient, NegotiateAuth, NTLMAuth
from httpx_extensions._auth import _AUTH_TRACE, _spnego_neg_state

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file
from .test_auth_options import _NO_GSSAPI

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(
        tmp_path_factory.mktemp("mut") / "users.txt", [("EXAMPLE", "alice", "Passw0rd")]
    )


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as server:
        yield server
    assert server.errors == []


# -- the negState reader ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "state"),
    [
        # A reject with its two outer lengths in the 4-octet long form (BER, not DER's
        # minimal form, but the reader takes 1-4 length octets): still a reject.
        (bytes.fromhex("a1840000000b308400000005a0030a0102"), 2),
        # Five length octets (a length past 4 GiB, which no header carries) are more than
        # the reader takes: not taken for a reject; pyspnego's parser has the last word.
        (bytes.fromhex("a18500000000073005a0030a0102"), None),
    ],
    ids=["four-length-octets", "five-length-octets"],
)
def test_auth_mut_neg_state_long_form_lengths(token: bytes, state: int | None) -> None:
    assert _spnego_neg_state(token) == state


# -- what a connection shows -----------------------------------------------------------------


def test_auth_mut_repr_shows_the_class_and_the_user_only() -> None:
    # As docs/security.md shows it: no password, no digest.
    assert repr(NTLMAuth(*ALICE)) == "NTLMAuth('EXAMPLE\\\\alice')"
    assert repr(NegotiateAuth("alice@EXAMPLE.TEST", "pw")) == "NegotiateAuth('alice@EXAMPLE.TEST')"
    assert repr(NegotiateAuth()) == "NegotiateAuth('<current user>')"


async def test_auth_mut_connections_show_the_user_never_the_password_digest(
    iis: IISLikeServer,
) -> None:
    # The partition of an authenticated connection is in client.connections, which an
    # application may log: it names the user, and its repr hides the digest that keeps two
    # passwords of one user apart.
    digest = hashlib.sha256(ALICE[1].encode()).hexdigest()[:16]
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert response.status_code == 200
        (info,) = client.connections
        assert info.partition.secret == digest  # type: ignore[attr-defined]
        shown = repr(client.connections)
        assert "alice" in shown
        assert digest not in shown
        assert_pool_clean(client)


async def test_auth_mut_same_user_with_another_password_gets_no_authenticated_connection(
    iis: IISLikeServer,
) -> None:
    # The password is part of the identity: alice's connection, authenticated with her
    # password, must not serve a request made with a wrong one (nor vice versa).
    async with ExClient() as client:
        good = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert good.status_code == 200
        wrong = await client.get(iis.url + "/", auth=NTLMAuth(ALICE[0], "wrong"))
        assert wrong.status_code == 401
        assert wrong.extensions[CONN_ID] != good.extensions[CONN_ID]
        assert [(r.ntlm_message, r.status) for r in iis.log[3:]] == [
            (None, 401),
            (1, 401),
            (3, 401),
        ]
        again = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert again.status_code == 200
        assert again.extensions[CONN_ID] == good.extensions[CONN_ID]
        assert_pool_clean(client)


# -- the trace of a preemptive request --------------------------------------------------------


async def test_auth_mut_preemptive_option_trace(iis: IISLikeServer) -> None:
    # preemptive=True on a new connection: the choice and the context are recorded when the
    # first token is made (by the transport's hook), then the two exchanges.
    trace: list[dict[str, object]] = []
    async with ExClient() as client:
        response = await client.get(
            iis.url + "/", auth=NTLMAuth(*ALICE, preemptive=True), extensions={_AUTH_TRACE: trace}
        )
        assert response.status_code == 200
        assert_pool_clean(client)
    assert [(r.ntlm_message, r.status) for r in iis.log] == [(1, 401), (3, 200)]
    assert [record["event"] for record in trace] == [
        "choice",
        "context",
        "exchange",
        "exchange",
        "done",
    ]
    assert trace[0] == {"event": "choice", "scheme": "NTLM", "preemptive": True}
    assert trace[1] == {
        "event": "context",
        "protocol": "ntlm",
        "spn": "HTTP/127.0.0.1",
        "channel_binding": False,
    }
    first, second = trace[2], trace[3]
    assert (first["status"], second["status"]) == (401, 200)
    assert first["scheme"] == second["scheme"] == "NTLM"
    # Sizes as the server saw the tokens: the type 1, then the type 3.
    assert (first["sent_bytes"], second["sent_bytes"]) == tuple(r.token_length for r in iis.log)
    assert first["received_bytes"] != 0  # the type 2 challenge
    assert second["received_bytes"] == 0  # NTLM's 200 carries no token
    assert first["conn_id"] == second["conn_id"] == response.extensions["conn_id"]
    assert trace[4] == {"event": "done", "complete": True, "mechanism": "ntlm"}


# -- the shipped bounds ------------------------------------------------------------------------
# tests/test_auth_bounds.py lowers them to see the eviction order with real handshakes; these
# check the values shipped, without a server: NTLM template contexts are made without I/O, and
# an answer that is not a 401 is what makes the auth remember a connection.


def test_auth_mut_ntlm_templates_shipped_bound_is_64_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[str] = []
    real = spnego.client

    def counting(*args: Any, **kwargs: Any) -> Any:
        created.append(kwargs["hostname"])
        return real(*args, **kwargs)

    monkeypatch.setattr(spnego, "client", counting)
    auth = NTLMAuth(*ALICE)

    def context_for(host: str) -> None:
        auth._sync_new_context("ntlm", httpx.Request("GET", f"http://{host}/"), None)

    hosts = [f"h{n}.test" for n in range(64)]
    for host in [*hosts, hosts[0]]:
        context_for(host)
    assert created == hosts  # 64 kept: the first is reused, its hashes not derived again
    context_for("h64.test")  # the 65th pushes out the least recently used, h1
    context_for("h0.test")
    assert created == [*hosts, "h64.test"]
    context_for("h1.test")
    assert created == [*hosts, "h64.test", "h1.test"]


def test_auth_mut_remembers_4096_authenticated_connections() -> None:
    # A server that challenges a connection the auth saw authenticated re-challenges every
    # request: the auth then opens with its first token there. It knows 4096 connections.
    auth = NTLMAuth(*ALICE)
    conn_ids = iter(range(1, 4098))
    first_tokens: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "warm.test":  # an anonymous 200: its connection is remembered
            return httpx.Response(200, extensions={CONN_ID: next(conn_ids)})
        if request.url.path == "/again":
            first_tokens.append("Authorization" in request.headers)
            return httpx.Response(200)  # (no conn_id: nothing more to remember)
        # conn_id 1 (the oldest) or 2 challenged: then the type 1 is refused outright.
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": "NTLM"},
            extensions={CONN_ID: int(request.url.path[1:])},
        )

    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        for _ in range(4096):
            assert client.get("http://warm.test/").status_code == 200
        # All 4096 are known: conn_id 1 challenged makes a.test preemptive.
        assert client.get("http://a.test/1").status_code == 401
        client.get("http://a.test/again")
        # One more: conn_id 1 is forgotten (2 is the oldest now), so b.test is not.
        assert client.get("http://warm.test/").status_code == 200
        assert client.get("http://b.test/1").status_code == 401
        client.get("http://b.test/again")
    assert first_tokens == [True, False]


async def test_auth_mut_refused_preemptive_token_then_type1_leg_drops_the_body(
    user_file: Path,
) -> None:
    # NegotiateAuth opens with Negotiate; a server offering NTLM only refuses it with fresh
    # offers. The handshake that follows is an ordinary one: its type 1 leg goes without the
    # body (the server answers it with 401 whatever it carries), its type 3 leg with it.
    sent: list[tuple[str | None, str | None, int]] = []

    async def hook(request: httpx.Request) -> None:
        scheme = request.headers.get("Authorization", "").partition(" ")[0] or None
        sent.append((scheme, request.headers.get("Content-Length"), len(await request.aread())))

    body = b"x" * 3000
    trace: list[dict[str, object]] = []
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as server:
        async with ExClient(event_hooks={"request": [hook]}) as client:
            response = await client.post(
                server.url + "/upload",
                content=body,
                auth=NegotiateAuth(*ALICE, preemptive=True),
                extensions={_AUTH_TRACE: trace},
            )
            assert response.status_code == 200
            assert response.json()["body_length"] == len(body)
            assert_pool_clean(client)
        assert [(r.scheme, r.ntlm_message, r.status) for r in server.log] == [
            ("Negotiate", None, 401),  # (a scheme this server does not read)
            ("NTLM", 1, 401),
            ("NTLM", 3, 200),
        ]
        assert server.errors == []
    # (The hook sees the first request before the transport adds its preemptive token.)
    assert sent == [(None, "3000", 3000), ("NTLM", "0", 0), ("NTLM", "3000", 3000)]
    # The trace has the preemptive choice and context, then the fresh ones.
    assert [(r["event"], r.get("protocol", r.get("scheme"))) for r in trace] == [
        ("choice", "Negotiate"),
        ("context", "negotiate"),
        ("exchange", "Negotiate"),
        ("choice", "NTLM"),
        ("context", "ntlm"),
        ("exchange", "NTLM"),
        ("exchange", "NTLM"),
        ("done", None),
    ]


# -- a preemptive handshake split by the server ------------------------------------------------


async def test_auth_mut_preemptive_handshake_split_by_the_server_is_an_error(
    iis: IISLikeServer,
) -> None:
    # The server announces it closes the connection with the challenge to the preemptive
    # type 1: the type 3 leg, pinned to that connection, goes out on a new one, which answers
    # with fresh offers. The handshake starts over there once, the server closes that one
    # too, and the split is reported with the origin, never taken for a rejected login.
    port = iis.url.rsplit(":", 1)[1]
    async with ExClient() as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get(
                iis.url + "/close-after-challenge?announce=1",
                auth=NTLMAuth(*ALICE, preemptive=True),
            )
        assert str(caught.value).startswith(
            f"NTLM handshake with http://127.0.0.1:{port} was split: the server closed connection "
        )
        assert_pool_clean(client)
    assert [(r.conn_seq, r.ntlm_message, r.status) for r in iis.log] == [
        (1, 1, 401),
        (2, 3, 401),
        (2, 1, 401),
        (3, 3, 401),
    ]


# -- what counts as an authenticated connection ----------------------------------------------


@pytest.mark.parametrize("path", ["/bad", "/denied-after-login"])
def test_auth_mut_a_400_does_not_count_as_an_authenticated_connection(
    path: str, user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection the auth saw answer with success, then challenge, marks its server as one
    # that re-challenges every request (and the auth sends its first token at once there). A
    # 400, anonymous or at the end of a handshake, is no success: the later challenge on the
    # same connection is an ordinary one, and the next request still goes anonymous first.
    monkeypatch.setenv("NTLM_USER_FILE", str(user_file))  # for the acceptor's type 2
    first_tokens: list[bool] = []
    acceptors: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        value = request.headers.get("Authorization")
        if request.url.path == "/probe":
            first_tokens.append(value is not None)
            return httpx.Response(200)  # (no conn_id: nothing to remember)
        offer = {"WWW-Authenticate": "NTLM"}
        if request.url.path == "/bad":
            return httpx.Response(400, extensions={CONN_ID: 1})
        if request.url.path == "/denied-after-login" and value is not None:
            token = base64.b64decode(value.partition(" ")[2])
            if token[8] == 3:  # the login went through, but the request is refused
                return httpx.Response(400, extensions={CONN_ID: 1})
            acceptors.append(spnego.server(protocol="ntlm"))
            challenge = base64.b64encode(acceptors[-1].step(token)).decode()
            offer = {"WWW-Authenticate": f"NTLM {challenge}"}
        return httpx.Response(401, headers=offer, extensions={CONN_ID: 1})

    with httpx.Client(transport=httpx.MockTransport(handler), auth=NTLMAuth(*ALICE)) as client:
        assert client.get(f"http://a.test{path}").status_code == 400
        # The same connection challenges; the type 1 is refused outright.
        assert client.get("http://a.test/").status_code == 401
        client.get("http://a.test/probe")
    assert first_tokens == [False]


# -- a missing gssapi is named only when it is missing, and only for Kerberos ------------------


@pytest.mark.parametrize(
    ("schemes", "allow_ntlm", "message"),
    [
        # The current user's NTLM credentials (NTLM_USER_FILE) are missing: an NTLM problem.
        (("NTLM",), True, "could not set up ntlm for 127.0.0.1: "),
        # No Kerberos ticket (the suite's Kerberos reaches no KDC), no NTLM credentials.
        (("Negotiate",), True, "Negotiate handshake with 127.0.0.1 failed: "),
        (("Negotiate",), False, "Negotiate handshake with 127.0.0.1 failed: "),
    ],
)
async def test_auth_mut_failure_with_gssapi_installed_is_not_blamed_on_gssapi(
    user_file: Path, schemes: tuple[str, ...], allow_ntlm: bool, message: str
) -> None:
    with IISLikeServer(user_file=user_file, schemes=schemes) as server:
        # The server sets NTLM_USER_FILE for its acceptor; the client must not find it.
        saved = os.environ.pop("NTLM_USER_FILE")
        try:
            async with ExClient() as client:
                with pytest.raises(AuthenticationError) as caught:
                    await client.get(server.url + "/", auth=NegotiateAuth(allow_ntlm=allow_ntlm))
                assert_pool_clean(client)
        finally:
            os.environ["NTLM_USER_FILE"] = saved
        assert [(r.scheme, r.status) for r in server.log] == [(None, 401)]
    assert str(caught.value).startswith(message)
    assert "gssapi" not in str(caught.value)


def test_auth_mut_ntlm_failure_without_gssapi_is_not_blamed_on_gssapi(user_file: Path) -> None:
    # Without gssapi, an NTLM-only server and no NTLM credentials: the error is NTLM's own,
    # not advice to install Kerberos support that NTLM does not use.
    env = {k: v for k, v in os.environ.items() if k != "NTLM_USER_FILE"}
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as server:
        result = subprocess.run(
            [sys.executable, "-c", _NO_GSSAPI, server.url + "/", "1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERROR could not set up ntlm for 127.0.0.1: "), result.stdout
    assert "gssapi" not in result.stdout


# -- how a challenge is read --------------------------------------------------------------------


def _acceptor_handler(
    challenge_header: Callable[[str], str], after_login: httpx.Response
) -> Callable[[httpx.Request], httpx.Response]:
    """A one-connection NTLM server: bare offer, then a real pyspnego acceptor's type 2,
    written into WWW-Authenticate by ``challenge_header``; ``after_login`` answers the
    type 3 (not checked)."""
    acceptors: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        value = request.headers.get("Authorization")
        if value is None:
            return httpx.Response(401, headers={"WWW-Authenticate": "NTLM"})
        token = base64.b64decode(value.partition(" ")[2])
        if token[8] == 3:
            return after_login
        acceptors.append(spnego.server(protocol="ntlm"))
        challenge = base64.b64encode(acceptors[-1].step(token)).decode()
        return httpx.Response(401, headers={"WWW-Authenticate": challenge_header(challenge)})

    return handler


@pytest.mark.parametrize(
    "header",
    [
        lambda token: f"NTLM  {token}",  # two spaces
        lambda token: f"Basic realm=x, NTLM {token} ",
    ],
    ids=["two-spaces", "after-another-challenge"],
)
def test_auth_mut_challenge_token_with_spaces_around_it_is_read(
    header: Callable[[str], str], user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NTLM_USER_FILE", str(user_file))  # for the acceptor's type 2
    handler = _acceptor_handler(header, httpx.Response(200, text="in"))
    with httpx.Client(transport=httpx.MockTransport(handler), auth=NTLMAuth(*ALICE)) as client:
        response = client.get("http://a.test/")
    assert response.status_code == 200
    assert response.text == "in"


def test_auth_mut_challenge_token_that_is_not_base64_is_an_error(
    user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real type 2 with a character outside base64 in it: an error naming the host, not a
    # token decoded with that character skipped (nor a 401 taken for a rejected login).
    monkeypatch.setenv("NTLM_USER_FILE", str(user_file))
    handler = _acceptor_handler(lambda token: f"NTLM {token[:8]}*{token[8:]}", httpx.Response(200))
    client = httpx.Client(transport=httpx.MockTransport(handler), auth=NTLMAuth(*ALICE))
    with client, pytest.raises(AuthenticationError) as caught:
        client.get("http://a.test/")
    assert str(caught.value).startswith("NTLM challenge from a.test is not valid base64 (")


def test_auth_mut_401_with_a_token_after_the_last_leg_is_the_answer(
    user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server answers the type 3 with a 401 that carries a token of the scheme (an
    # acceptor that authenticated but refuses, in its own way): the client has finished its
    # handshake, so that 401 is the final answer, returned once, not a token to step.
    monkeypatch.setenv("NTLM_USER_FILE", str(user_file))
    final = httpx.Response(401, headers={"WWW-Authenticate": "NTLM oQcwBaADCgEA"})
    handler = _acceptor_handler(lambda token: f"NTLM {token}", final)
    trace: list[dict[str, object]] = []
    with httpx.Client(transport=httpx.MockTransport(handler), auth=NTLMAuth(*ALICE)) as client:
        response = client.get("http://a.test/", extensions={_AUTH_TRACE: trace})
    assert response.status_code == 401
    assert trace[-1] == {
        "event": "rejected",
        "mechanism": "ntlm",
        "reason": "401 after the client finished its handshake",
    }
