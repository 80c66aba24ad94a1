"""The handshake paths the other auth tests leave out (issue 14, branch coverage of _auth.py):
servers that answer in ways IIS and Apache do not (a token after the handshake ended, a
challenge cookie for another path, a 403 around a login, the ``Kerberos`` scheme), the
current user with no credentials, gssapi that cannot be imported, mutual authentication on
ExSyncClient and on a transport without sockets.

``ScriptedPeer`` is a loopback HTTP/1.1 server whose answers a test writes as a function of
the request and of its connection's state; its NTLM answers come from a real pyspnego
acceptor per connection (``NTLMAcceptor``), so the client's tokens are checked for real.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import spnego

from httpx_extensions import AuthenticationError, ExClient, ExSyncClient, NegotiateAuth, NTLMAuth
from httpx_extensions._auth import _AUTH_TRACE
from httpx_extensions.testing._iis import _client_channel_binding

from .conftest import assert_pool_clean
from .servers import IISLikeServer, LoopbackServer, write_user_file
from .test_sync_client import assert_pool_clean as assert_sync_pool_clean

pytestmark = pytest.mark.anyio

USERS = [("EXAMPLE", "alice", "Passw0rd")]
ALICE = ("EXAMPLE\\alice", "Passw0rd")


# -- a scripted loopback peer ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """One request as the peer read it; ``headers`` keeps names lowercased, last value wins."""

    conn: int  # 1, 2, ... in the order the peer accepted the connections
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclasses.dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    body: bytes = b""
    close: bool = False


Answer = Callable[[Request, dict[str, Any]], Reply]


class ScriptedPeer:
    """A loopback HTTP/1.1 server (or proxy: it answers any request target) that answers each
    request with ``answer(request, state)``, ``state`` being a dict kept per connection.
    Request bodies must have a Content-Length (what httpx sends for in-memory content)."""

    def __init__(self, answer: Answer, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._answer = answer
        self._ssl_context = ssl_context
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ScriptedPeer:
        self._accepter.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept() (close() alone does not)
        self._sock.close()
        self._accepter.join()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()

    def _accept(self) -> None:
        seq = 0
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            seq += 1
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, seq), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, seq: int) -> None:
        state: dict[str, Any] = {}
        buffer = b""
        if self._ssl_context is not None:
            try:
                conn = self._ssl_context.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
            with self._lock:
                self._conns.append(conn)
        with conn:
            try:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    line, *fields = head.decode("latin-1").split("\r\n")
                    method, target, _ = line.split(" ", 2)
                    headers = {}
                    for field in fields:
                        name, _, value = field.partition(":")
                        headers[name.strip().lower()] = value.strip()
                    length = int(headers.get("content-length", "0"))
                    while len(buffer) < length:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffer += data
                    body, buffer = buffer[:length], buffer[length:]
                    request = Request(seq, method, target, headers, body)
                    with self._lock:
                        self.requests.append(request)
                    reply = self._answer(request, state)
                    lines = [f"HTTP/1.1 {reply.status} X"]
                    lines += [f"{k}: {v}" for k, v in reply.headers]
                    lines.append(f"Content-Length: {len(reply.body)}")
                    if reply.close:
                        lines.append("Connection: close")
                    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body)
                    if reply.close:
                        return
            except OSError:
                return
            except BaseException as exc:  # a bug in the test's script: reported, not hidden
                self.errors.append(exc)


def ntlm_token(request: Request, header: str = "authorization") -> tuple[str, bytes] | None:
    value = request.headers.get(header)
    if value is None:
        return None
    scheme, _, data = value.partition(" ")
    return scheme, base64.b64decode(data)


def ntlm_step(state: dict[str, Any], token: bytes) -> bytes | None:
    """Step this connection's NTLM acceptor (made on the first token); its answer token."""
    if "acceptor" not in state or token[8:9] == b"\x01":  # a NEGOTIATE message starts over
        state["acceptor"] = spnego.server(protocol="ntlm")
    acceptor = state["acceptor"]
    out = acceptor.step(token)
    state["complete"] = acceptor.complete
    return out


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("auth-cov") / "users.txt", USERS)


@pytest.fixture
def ntlm_users(user_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The accounts for the scripted peers' acceptors (pyspnego reads NTLM_USER_FILE)."""
    monkeypatch.setenv("NTLM_USER_FILE", str(user_file))
    return user_file


def ntlm_origin(request: Request, state: dict[str, Any]) -> Reply:
    """An NTLM origin bound to the connection, as IIS: ``/forbidden`` answers an anonymous
    request 403, ``/denied`` answers a completed login 403 (and forgets it)."""
    token = ntlm_token(request)
    if token is None:
        if request.target.startswith("/forbidden"):
            return Reply(403)
        if state.get("user"):
            return Reply(200, body=b"again")
        return Reply(401, [("WWW-Authenticate", "NTLM")])
    out = ntlm_step(state, token[1])
    if not state["complete"]:
        return Reply(401, [("WWW-Authenticate", "NTLM " + base64.b64encode(out or b"").decode())])
    if request.target.startswith("/denied"):
        state.pop("acceptor")
        return Reply(403, body=b"denied")
    state["user"] = True
    return Reply(200, body=b"welcome")


def schemes_sent(peer: ScriptedPeer) -> list[tuple[int, str, str | None]]:
    """(connection, path, scheme of Authorization) per request the peer saw."""
    return [
        (r.conn, r.target, (r.headers.get("authorization") or " ").split(" ")[0] or None)
        for r in peer.requests
    ]


# -- the server's answer after the client finished ------------------------------------------


async def test_auth_cov_a_token_after_the_ntlm_handshake_ended_is_the_final_401(
    ntlm_users: Path,
) -> None:
    # The client's context is complete once it sent the AUTHENTICATE message: a 401 that
    # carries yet another NTLM token is a refusal, returned once, not a leg to answer.
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        token = ntlm_token(request)
        if token is None:
            return Reply(401, [("WWW-Authenticate", "NTLM")])
        out = ntlm_step(state, token[1])
        state.setdefault("challenge", out)
        value = base64.b64encode(state["challenge"]).decode()
        return Reply(401, [("WWW-Authenticate", f"NTLM {value}")], body=b"no")

    trace: list[dict[str, object]] = []
    with ScriptedPeer(answer) as peer:
        async with ExClient() as client:
            response = await client.get(
                peer.url + "/", auth=NTLMAuth(*ALICE), extensions={_AUTH_TRACE: trace}
            )
            assert response.status_code == 401
            assert response.text == "no"
            assert_pool_clean(client)
    assert peer.errors == []
    assert schemes_sent(peer) == [(1, "/", None), (1, "/", "NTLM"), (1, "/", "NTLM")]
    assert trace[-1] == {
        "event": "rejected",
        "mechanism": "ntlm",
        "reason": "401 after the client finished its handshake",
    }


# -- cookies a challenge sets ----------------------------------------------------------------


async def test_auth_cov_a_challenge_cookie_for_another_path_stays_off_the_next_leg(
    ntlm_users: Path,
) -> None:
    # The jar's rules decide (domain, path, secure): a cookie for /elsewhere is not sent
    # with the legs to /app, while the one for / is.
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        reply = ntlm_origin(request, state)
        if reply.status == 401:
            reply.headers += [
                ("Set-Cookie", "lb=node7; Path=/"),
                ("Set-Cookie", "other=x; Path=/elsewhere"),
            ]
        return reply

    def only_other(request: Request, state: dict[str, Any]) -> Reply:
        reply = ntlm_origin(request, state)
        if reply.status == 401:
            reply.headers.append(("Set-Cookie", "other=x; Path=/elsewhere"))
        return reply

    for script, expected in ((answer, "lb=node7"), (only_other, None)):
        with ScriptedPeer(script) as peer:
            async with ExClient() as client:
                response = await client.get(peer.url + "/app", auth=NTLMAuth(*ALICE))
                assert response.status_code == 200
                assert_pool_clean(client)
        assert peer.errors == []
        assert [r.headers.get("cookie") for r in peer.requests] == [None, expected, expected]


# -- what a 4xx around a login teaches the auth ----------------------------------------------


@pytest.mark.parametrize("first", ["/forbidden", "/denied"])
async def test_auth_cov_a_403_does_not_mark_the_connection_authenticated(
    ntlm_users: Path, first: str
) -> None:
    # A 403 (to an anonymous request, or after a completed login the server then forgot) is
    # no authenticated connection: the 401 that follows on it is an ordinary challenge, not
    # a server re-challenging authenticated connections. Taken for one, every later request
    # of this auth would open with a token, on every connection (a round trip wasted on
    # each, and the server's "no login needed" pages asked for one).
    auth = NTLMAuth(*ALICE)
    with ScriptedPeer(ntlm_origin) as peer:
        async with ExClient() as client:
            assert (await client.get(peer.url + first, auth=auth)).status_code == 403
            assert (await client.get(peer.url + "/login", auth=auth)).status_code == 200
            assert_pool_clean(client)
        async with ExClient() as client:  # a new connection
            assert (await client.get(peer.url + "/next", auth=auth)).status_code == 200
            assert_pool_clean(client)
    assert peer.errors == []
    sent = schemes_sent(peer)
    assert sent[-3:] == [(2, "/next", None), (2, "/next", "NTLM"), (2, "/next", "NTLM")]


# -- the current user with no credentials ----------------------------------------------------


async def test_auth_cov_current_user_ntlm_without_credentials_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # NegotiateAuth() answers an NTLM-only server with the current user's NTLM credentials,
    # which come from NTLM_USER_FILE: without one there is nothing to log on with.
    monkeypatch.delenv("NTLM_USER_FILE", raising=False)
    with ScriptedPeer(lambda request, state: Reply(401, [("WWW-Authenticate", "NTLM")])) as peer:
        async with ExClient() as client:
            with pytest.raises(AuthenticationError) as info:
                await client.get(peer.url + "/", auth=NegotiateAuth())
            assert_pool_clean(client)
    message = str(info.value)
    assert message.startswith("could not set up ntlm for 127.0.0.1: ")
    assert "No username or password was specified" in message
    assert "gssapi" not in message
    assert len(peer.requests) == 1  # no token went out


# -- gssapi that cannot be imported ----------------------------------------------------------


@pytest.fixture
def gssapi_not_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import gssapi`` fails, as where it is not installed. (pyspnego, imported already,
    keeps its GSSAPI provider; the Kerberos it tries here fails for real, with no realm.
    tests/test_auth_options.py runs the same without gssapi from the start, in a
    subprocess, which coverage does not follow.)"""
    pytest.importorskip("gssapi")
    monkeypatch.setitem(sys.modules, "gssapi", None)


@pytest.mark.usefixtures("gssapi_not_importable")
async def test_auth_cov_without_gssapi_kerberos_errors_name_the_missing_package() -> None:
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        return Reply(401, [("WWW-Authenticate", "Negotiate")])

    with ScriptedPeer(answer) as peer:
        async with ExClient() as client:
            # The current user: the first step finds no Kerberos (and no NTLM fallback).
            with pytest.raises(AuthenticationError) as first:
                await client.get(peer.url + "/", auth=NegotiateAuth(allow_ntlm=False))
            # A principal and password: setting up the context already fails.
            with pytest.raises(AuthenticationError) as second:
                await client.get(
                    peer.url + "/",
                    auth=NegotiateAuth("alice@NOWHERE.TEST", "pw", allow_ntlm=False),
                )
            assert_pool_clean(client)
    assert str(first.value).startswith("Negotiate for 127.0.0.1 needs Kerberos, but the gssapi")
    assert str(second.value).startswith(
        "could not set up kerberos for 127.0.0.1: Kerberos needs the gssapi package, "
        "which is not installed"
    )
    for info in (first, second):
        assert 'pip install "httpx-extensions[kerberos]"' in str(info.value)
        assert isinstance(info.value.__cause__, Exception)
    assert [r.headers.get("authorization") for r in peer.requests] == [None, None]


# -- mutual authentication where the client cannot close a socket ----------------------------


def spnego_ntlm_app_handler(corrupt: bool) -> Callable[[httpx.Request], httpx.Response]:
    """A Negotiate server (NTLM inside SPNEGO, a real pyspnego acceptor) for a transport
    without sockets; ``corrupt`` flips the last byte of its final token (the mechListMIC
    that proves it knew the session key)."""
    state: dict[str, Any] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        value = request.headers.get("Authorization")
        if value is None:
            return httpx.Response(401, headers={"WWW-Authenticate": "Negotiate"})
        token = base64.b64decode(value.partition(" ")[2])
        if "acceptor" not in state:
            state["acceptor"] = spnego.server(protocol="negotiate")
        acceptor = state["acceptor"]
        out = acceptor.step(token) or b""
        if not acceptor.complete:
            challenge = "Negotiate " + base64.b64encode(out).decode()
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if corrupt:
            out = out[:-1] + bytes([out[-1] ^ 1])
        final = "Negotiate " + base64.b64encode(out).decode()
        return httpx.Response(200, headers={"WWW-Authenticate": final}, text="hello")

    return handle


@pytest.mark.parametrize("corrupt", [False, True])
async def test_auth_cov_mutual_auth_on_a_transport_without_a_network_stream(
    ntlm_users: Path, corrupt: bool
) -> None:
    # httpx.MockTransport (as ASGITransport) gives responses no network stream: there is no
    # connection to drop, and a failed proof is still an AuthenticationError.
    transport = httpx.MockTransport(spnego_ntlm_app_handler(corrupt))
    async with httpx.AsyncClient(transport=transport) as client:
        auth = NegotiateAuth(*ALICE)
        if not corrupt:
            assert (await client.get("http://app.test/", auth=auth)).text == "hello"
            return
        with pytest.raises(AuthenticationError, match="mutual authentication with "):
            await client.get("http://app.test/", auth=auth)


def test_auth_cov_sync_mutual_auth_on_a_transport_without_a_network_stream(
    ntlm_users: Path,
) -> None:
    transport = httpx.MockTransport(spnego_ntlm_app_handler(corrupt=True))
    with (
        httpx.Client(transport=transport) as client,
        pytest.raises(AuthenticationError, match="mutual authentication with "),
    ):
        client.get("http://app.test/", auth=NegotiateAuth(*ALICE))


def test_auth_cov_sync_mutual_auth_failure_closes_the_connection(user_file: Path) -> None:
    # The server considers the connection authenticated: ExSyncClient must not keep it for
    # this identity's next request (which would then go with no handshake and no proof).
    with (
        IISLikeServer(user_file=user_file, schemes=("Negotiate",), final_token="corrupt") as srv,
        ExSyncClient() as client,
    ):
        auth = NegotiateAuth(*ALICE)
        for attempt in (1, 2):
            with pytest.raises(AuthenticationError, match="mutual authentication with "):
                client.get(srv.url + f"/{attempt}", auth=auth)
            assert srv.connections_opened == attempt
            assert srv.handshakes_completed == attempt
        assert_sync_pool_clean(client)
    assert srv.errors == []


# -- a provider call that fails on the sync driver -------------------------------------------


def test_auth_cov_sync_preemptive_kerberos_that_cannot_start_sends_nothing(
    server: LoopbackServer,
) -> None:
    # The preemptive token is made on ExSyncClient's thread once the connection is open;
    # the provider's failure (no KDC for the realm) is the caller's AuthenticationError.
    pytest.importorskip("gssapi")
    auth = NegotiateAuth("alice@NOWHERE.TEST", "pw", allow_ntlm=False, preemptive=True)
    with ExSyncClient() as client:
        with pytest.raises(
            AuthenticationError, match=r"could not set up kerberos for 127\.0\.0\.1"
        ):
            client.get(server.url + "/", auth=auth)
        assert_sync_pool_clean(client)
    assert server.requests_total == 0


# -- a preemptive token the server refuses ---------------------------------------------------


async def test_auth_cov_refused_preemptive_token_starts_the_handshake_on_that_connection(
    ntlm_users: Path,
) -> None:
    # IIS in kernel mode answers a token on a new connection with 401.1 and fresh offers:
    # the ordinary handshake follows on the same connection (no trace asked for).
    def answer(request: Request, state: dict[str, Any]) -> Reply:
        if not state.get("refused"):
            state["refused"] = True
            return Reply(401, [("WWW-Authenticate", "NTLM")], body=b"401.1")
        return ntlm_origin(request, state)

    with ScriptedPeer(answer) as peer:
        async with ExClient() as client:
            response = await client.get(peer.url + "/", auth=NTLMAuth(*ALICE, preemptive=True))
            assert response.status_code == 200
            assert response.text == "welcome"
            assert_pool_clean(client)
    assert peer.errors == []
    assert schemes_sent(peer) == [(1, "/", "NTLM")] * 3


# -- TLS without a server certificate --------------------------------------------------------


async def test_auth_cov_tls_without_a_certificate_logs_on_without_channel_binding(
    ntlm_users: Path,
) -> None:
    # An anonymous cipher suite (no certificate: nothing to bind to, RFC 5929 needs one):
    # channel_binding=True then sends no binding, and the login still works.
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    for context in (server_context, client_context):
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("aNULL:@SECLEVEL=0")
    with ScriptedPeer(ntlm_origin, ssl_context=server_context) as peer:
        async with ExClient(verify=client_context) as client:
            response = await client.get(peer.url + "/", auth=NTLMAuth(*ALICE))
            assert response.status_code == 200
            assert (
                response.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
                is None
            )
            assert_pool_clean(client)
    assert peer.errors == []
    type3 = ntlm_token(peer.requests[-1])
    assert type3 is not None
    assert _client_channel_binding(type3[1]) in (None, bytes(16))  # none, or "no binding"


# -- the redacting filter on its own ---------------------------------------------------------


def test_auth_cov_spnego_filter_replaces_a_token_in_the_record_itself() -> None:
    # Called directly: in a whole run the httpx2 flavour's twin filter, on the same spnego
    # loggers and added first, redacts before this one sees the record.
    from httpx_extensions._auth import _RedactSpnegoTokens

    token = base64.b64encode(b"NTLMSSP\x00" + bytes(range(40))).decode()
    record = logging.LogRecord("spnego._ntlm", logging.DEBUG, __file__, 1, "in: %s", (token,), None)
    assert _RedactSpnegoTokens().filter(record) is True
    assert (record.msg, record.args) == (f"in: <{len(token)} characters redacted>", None)
    assert token not in record.getMessage()
