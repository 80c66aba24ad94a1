"""Self-tests for the authenticating loopback proxy (``httpx_extensions.testing.AuthProxy``).

The client's proxy-auth tests will trust this proxy to reject every handshake Squid would
reject, so its behaviour is pinned here independently of the library under test: pyspnego's
own *initiator* over raw sockets with h11 as the client-side parser, and stock httpx for
Basic. Origins are the suite's LoopbackServer (``/echo`` shows what reached the origin) and
IISLikeServer (connection-bound auth on the second hop).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import spnego
import trustme
from spnego.channel_bindings import GssChannelBindings

from httpx_extensions.testing import (
    AuthProxy,
    IISLikeServer,
    ProxyRequestRecord,
    channel_bindings_for,
    write_user_file,
)

try:
    from tests.servers import LoopbackServer
except ImportError:  # tests/ on sys.path (pytest rootdir-less "prepend" import mode)
    from servers import LoopbackServer  # type: ignore[no-redef,import-not-found,unused-ignore]

USERS = [
    ("EXAMPLE", "alice", "Passw0rd"),
    ("EXAMPLE", "bob", "S3cret!"),
    ("", "zoë", "pässwörd"),
]
ALICE = ("EXAMPLE\\alice", "Passw0rd")
REALM = "loopback proxy"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("proxy") / "users.txt", USERS)


@pytest.fixture(scope="module")
def proxy_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def serve(proxy: AuthProxy) -> Iterator[AuthProxy]:
    with proxy as running:
        yield running
    assert running.errors == []
    assert running.proxy_credentials_forwarded == 0


@pytest.fixture
def proxy(user_file: Path) -> Iterator[AuthProxy]:
    yield from serve(AuthProxy(user_file=user_file, schemes=("NTLM", "Negotiate", "Basic")))


@pytest.fixture
def origin() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv
    assert srv.errors == []


# -- a hand-written client: h11 over a raw socket ----------------------------------------------


class Conn:
    """One client TCP connection to the proxy, speaking HTTP/1.1 through h11."""

    def __init__(self, proxy: AuthProxy, context: ssl.SSLContext | None = None) -> None:
        raw = socket.create_connection((proxy.host, proxy.port), timeout=10)
        self.sock: socket.socket = (
            context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        )
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, *events: Any) -> None:
        for event in events:
            data = self.h11.send(event)
            if data:
                self.sock.sendall(data)

    def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None
    ) -> tuple[h11.Response, bytes]:
        """One exchange; reads the whole response body (drains the 407)."""
        host = target if method == "CONNECT" else target.split("/")[2]
        self.send(
            h11.Request(method=method, target=target, headers=[("Host", host), *(headers or [])]),
            h11.EndOfMessage(),
        )
        response: h11.Response | None = None
        body = b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(self.sock.recv(65536))
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        assert response is not None
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return response, body

    def peer_closed(self) -> bool:
        """Whether the proxy closed this connection (it must have answered already)."""
        return self.sock.recv(1) == b""

    def tunnel_get(self, path: str, host: str) -> tuple[h11.Response, bytes]:
        """A request through an open CONNECT tunnel (a fresh h11 parser for the origin)."""
        self.h11 = h11.Connection(h11.CLIENT)
        return self.request("GET", f"http://{host}{path}")


def header(response: h11.Response, name: str) -> list[str]:
    return [v.decode() for k, v in response.headers if k == name.lower().encode()]


def token_of(response: h11.Response, scheme: str) -> bytes:
    values = header(response, "proxy-authenticate")
    tokens = [v.split(" ", 1)[1] for v in values if v.lower().startswith(scheme.lower() + " ")]
    assert len(tokens) == 1, values
    return base64.b64decode(tokens[0])


def proxy_auth(scheme: str, token: bytes | None) -> list[tuple[str, str]]:
    assert token is not None
    return [("Proxy-Authorization", f"{scheme} {base64.b64encode(token).decode()}")]


def basic(user: str, password: str) -> list[tuple[str, str]]:
    value = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [("Proxy-Authorization", f"Basic {value}")]


def initiator(user: str, password: str, protocol: str = "ntlm") -> spnego.ContextProxy:
    return spnego.client(user, password, hostname="127.0.0.1", service="HTTP", protocol=protocol)


def ntlm_handshake(
    conn: Conn,
    method: str,
    target: str,
    user: str = ALICE[0],
    password: str = ALICE[1],
    *,
    scheme: str = "NTLM",
    bindings: GssChannelBindings | None = None,
) -> tuple[h11.Response, bytes]:
    """Both legs on ``conn``; the final response (200 or 407)."""
    context = initiator(user, password, scheme.lower())
    first, body = conn.request(method, target, proxy_auth(scheme, context.step()))
    assert first.status_code == 407, body
    type3 = context.step(token_of(first, scheme), channel_bindings=bindings)
    final, body = conn.request(method, target, proxy_auth(scheme, type3))
    if final.status_code == 200 and context.protocol == "negotiate":
        assert not context.complete  # SPNEGO needs the proxy's final token
        assert context.step(token_of(final, scheme)) is None
        assert context.complete
    return final, body


def wait_until(condition: Callable[[], bool]) -> None:
    """Wait for another thread to make ``condition`` true; fail (not hang) if it never does.

    The bound only keeps a broken proxy from hanging the run; nothing is measured."""
    for _ in range(2000):
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError("condition never became true")


def echoed_headers(body: bytes) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(body)["headers"]}


# -- offers and bodies ---------------------------------------------------------------------------


def test_proxy_anonymous_request_gets_407_with_offers_and_a_body(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as conn:
        response, body = conn.request("GET", origin.url + "/echo")
        assert response.status_code == 407
        assert header(response, "proxy-authenticate") == [
            "NTLM",
            "Negotiate",
            f'Basic realm="{REALM}", charset="UTF-8"',
        ]
        assert header(response, "content-type") == ["text/html"]
        assert header(response, "content-length") == [str(len(body))]
        assert b"407 - Proxy Authentication Required" in body
        assert header(response, "proxy-connection") == ["keep-alive"]
        # The connection stays open for the handshake.
        again, _ = conn.request("GET", origin.url + "/echo")
        assert again.status_code == 407
    assert origin.requests_total == 0
    assert proxy.challenges_sent == 2
    assert proxy.connections_opened == 1
    first = proxy.log[0]
    assert isinstance(first, ProxyRequestRecord)
    assert (first.kind, first.status, first.user, first.proxy_authorization) == (
        "forward",
        407,
        None,
        False,
    )
    assert first.target == origin.url + "/echo"


def test_proxy_chunked_407_bodies(user_file: Path, origin: LoopbackServer) -> None:
    with (
        AuthProxy(user_file=user_file, schemes=("Basic",), chunked_407=True) as proxy,
        Conn(proxy) as conn,
    ):
        response, body = conn.request("GET", origin.url + "/")
        assert response.status_code == 407
        assert header(response, "transfer-encoding") == ["chunked"]
        assert header(response, "content-length") == []
        assert b"407 - Proxy Authentication Required" in body
        # Only a client that read both chunks and the terminator gets a clean 200 next.
        ok, text = conn.request("GET", origin.url + "/", basic(*ALICE))
        assert (ok.status_code, text) == (200, b"Hello, world!")


@pytest.mark.parametrize(
    ("schemes", "offers"),
    [
        (("Negotiate", "NTLM", "Basic"), ["Negotiate", "NTLM", "Basic"]),
        (("basic",), ["Basic"]),
        (("ntlm", "digest"), ["NTLM", "Digest"]),
    ],
)
def test_proxy_schemes_option_chooses_the_offers_in_order(
    user_file: Path, origin: LoopbackServer, schemes: tuple[str, ...], offers: list[str]
) -> None:
    with AuthProxy(user_file=user_file, schemes=schemes) as proxy, Conn(proxy) as conn:
        response, _ = conn.request("GET", origin.url)
        assert [v.split(" ")[0] for v in header(response, "proxy-authenticate")] == offers


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schemes": ()}, "schemes"),
        ({"schemes": ("NTLM", "Kerberos")}, "schemes"),
        ({"schemes": ("NTLM", "ntlm")}, "repeats"),
        ({"require_channel_binding": True}, "ssl_context"),
        ({"realm": 'a"b'}, "realm"),
    ],
)
def test_proxy_bad_options_are_refused(
    user_file: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AuthProxy(user_file=user_file, **kwargs)


def test_proxy_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AuthProxy(user_file=tmp_path / "nope.txt")


# -- NTLM: forward -------------------------------------------------------------------------------


def test_proxy_ntlm_forward_handshake_binds_the_connection(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as conn:
        anonymous, _ = conn.request("GET", origin.url + "/echo")
        assert anonymous.status_code == 407
        final, body = ntlm_handshake(conn, "GET", origin.url + "/echo?leg=3")
        assert final.status_code == 200
        seen = echoed_headers(body)
        assert "proxy-authorization" not in seen
        assert "proxy-connection" not in seen
        assert json.loads(body)["path"] == "/echo?leg=3"  # origin-form on the second hop
        # Authenticated connection: later requests pass without Proxy-Authorization.
        for _ in range(3):
            later, body = conn.request("GET", origin.url + "/echo")
            assert later.status_code == 200
            assert "proxy-authorization" not in echoed_headers(body)
    assert proxy.handshakes_started == 1
    assert proxy.handshakes_completed == 1
    assert proxy.challenges_sent == 2  # the offer and the challenge
    assert proxy.requests_forwarded == 4
    assert proxy.connections_opened == 1
    # One upstream connection for the client connection and origin.
    assert proxy.upstream_connections_opened == 1
    assert origin.connections_opened == 1
    assert proxy.connection_users() == {1: "EXAMPLE\\alice"}
    records = proxy.log
    assert [(r.status, r.proxy_authorization, r.user) for r in records] == [
        (407, False, None),
        (407, True, None),
        (200, True, "EXAMPLE\\alice"),
        (200, False, "EXAMPLE\\alice"),
        (200, False, "EXAMPLE\\alice"),
        (200, False, "EXAMPLE\\alice"),
    ]
    assert [r.ntlm_message for r in records[:3]] == [None, 1, 3]
    assert records[2].handshake
    assert records[2].mechanism == "ntlm"
    assert {r.conn_seq for r in records} == {1}
    assert len({r.client_port for r in records}) == 1
    assert all(r.token_length == 0 for r in records[3:])
    assert "host" in records[2].forwarded_headers


def test_proxy_ntlm_type3_on_another_connection_fails(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    context = initiator(*ALICE)
    with Conn(proxy) as first, Conn(proxy) as second:
        challenge, _ = first.request("GET", origin.url, proxy_auth("NTLM", context.step()))
        assert challenge.status_code == 407
        type3 = context.step(token_of(challenge, "NTLM"))
        wrong, _ = second.request("GET", origin.url, proxy_auth("NTLM", type3))
        assert wrong.status_code == 407
        assert [v.split(" ")[0] for v in header(wrong, "proxy-authenticate")] == [
            "NTLM",
            "Negotiate",
            "Basic",
        ]
        # Neither connection is authenticated.
        assert first.request("GET", origin.url)[0].status_code == 407
    assert origin.requests_total == 0
    assert proxy.handshakes_completed == 0
    assert "no handshake in progress" in (proxy.log[1].error or "")


def test_proxy_ntlm_wrong_password_is_407(proxy: AuthProxy, origin: LoopbackServer) -> None:
    with Conn(proxy) as conn:
        final, _ = ntlm_handshake(conn, "GET", origin.url, ALICE[0], "wrong")
        assert final.status_code == 407
        assert conn.request("GET", origin.url)[0].status_code == 407
    assert proxy.handshakes_completed == 0
    assert proxy.connection_users() == {1: None}
    assert origin.requests_total == 0
    # The refusal says why without any token or password in it.
    error = proxy.log[1].error or ""
    assert "logon was denied" in error, error
    assert "Passw0rd" not in error


def test_proxy_negotiate_ntlm_sends_the_final_token_on_the_forwarded_response(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as conn:
        final, _ = ntlm_handshake(conn, "GET", origin.url + "/", scheme="Negotiate")
        assert final.status_code == 200
        assert conn.request("GET", origin.url + "/")[0].status_code == 200
    assert proxy.log[-2].scheme == "Negotiate"
    assert proxy.connection_users() == {1: "EXAMPLE\\alice"}


def test_proxy_new_handshake_on_an_authenticated_connection_starts_over(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as conn:
        assert ntlm_handshake(conn, "GET", origin.url)[0].status_code == 200
        bob = ("EXAMPLE\\bob", "S3cret!")
        assert ntlm_handshake(conn, "GET", origin.url, *bob)[0].status_code == 200
        assert conn.request("GET", origin.url)[0].status_code == 200
    assert proxy.connection_users() == {1: "EXAMPLE\\bob"}
    assert proxy.log[-1].user == "EXAMPLE\\bob"


def test_proxy_refused_credentials_unauthenticate_the_connection(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as conn:
        assert ntlm_handshake(conn, "GET", origin.url)[0].status_code == 200
        assert conn.request("GET", origin.url, basic(ALICE[0], "nope"))[0].status_code == 407
        # As IIS and Squid: the connection no longer passes as alice.
        assert conn.request("GET", origin.url)[0].status_code == 407
    assert proxy.connection_users() == {1: None}


def test_proxy_rechallenge_every_request(user_file: Path, origin: LoopbackServer) -> None:
    with AuthProxy(user_file=user_file, rechallenge_every_request=True) as proxy:
        with Conn(proxy) as conn:
            for _ in range(2):
                assert ntlm_handshake(conn, "GET", origin.url)[0].status_code == 200
                assert conn.request("GET", origin.url)[0].status_code == 407
        assert proxy.handshakes_completed == 2
        assert proxy.connection_users() == {1: None}
        assert origin.requests_total == 2


# -- CONNECT -------------------------------------------------------------------------------------


def test_proxy_ntlm_connect_handshake_then_tunnel(proxy: AuthProxy, origin: LoopbackServer) -> None:
    authority = f"127.0.0.1:{origin.port}"
    with Conn(proxy) as conn:
        anonymous, body = conn.request("CONNECT", authority)
        assert anonymous.status_code == 407
        assert body
        final, _ = ntlm_handshake(conn, "CONNECT", authority)
        assert final.status_code == 200
        assert final.reason == b"Connection established"
        # Inside the tunnel: plain HTTP to the origin, which sees no proxy header at all.
        response, body = conn.tunnel_get("/echo", authority)
        assert response.status_code == 200
        assert not any(name.startswith("proxy-") for name in echoed_headers(body))
    assert proxy.tunnels_opened == 1
    assert proxy.requests_forwarded == 0
    assert proxy.handshakes_completed == 1
    assert [(r.kind, r.method, r.target, r.status) for r in proxy.log] == [
        ("connect", "CONNECT", authority, 407),
        ("connect", "CONNECT", authority, 407),
        ("connect", "CONNECT", authority, 200),
    ]
    assert origin.connections_opened == 1


def test_proxy_authenticated_connection_opens_a_tunnel_without_credentials(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as conn:
        assert ntlm_handshake(conn, "GET", origin.url)[0].status_code == 200
        response, _ = conn.request("CONNECT", f"localhost:{origin.port}")
        assert response.status_code == 200
        assert conn.tunnel_get("/", f"localhost:{origin.port}")[1] == b"Hello, world!"
    assert proxy.log[-1].proxy_authorization is False
    assert proxy.log[-1].user == "EXAMPLE\\alice"


@pytest.mark.parametrize("method", ["GET", "CONNECT"])
def test_proxy_refuses_non_loopback_targets_without_connecting(
    proxy: AuthProxy, method: str
) -> None:
    # 127.0.0.2 is on this machine yet not an allowed target: a proxy that connected
    # anyway would get a refusal (502), never the 403.
    target = "127.0.0.2:8080" if method == "CONNECT" else "http://127.0.0.2:8080/"
    with Conn(proxy) as conn:
        response, body = conn.request(method, target, basic(*ALICE))
        assert response.status_code == 403
        assert b"only loopback targets" in body
        assert conn.request(method, target)[0].status_code == 403  # no auth needed to learn it
    assert proxy.upstream_connections_opened == 0
    assert proxy.challenges_sent == 0


@pytest.mark.parametrize(
    ("method", "target"),
    [("GET", "https://127.0.0.1:1/"), ("CONNECT", "127.0.0.1"), ("GET", "http://127.0.0.1:x/")],
)
def test_proxy_malformed_targets_are_400(proxy: AuthProxy, method: str, target: str) -> None:
    with Conn(proxy) as conn:
        host = [("Host", "127.0.0.1")]
        conn.send(h11.Request(method=method, target=target, headers=host), h11.EndOfMessage())
        data = conn.sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 400 ")
    assert proxy.upstream_connections_opened == 0


# -- Basic and Digest ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password"),
    [("EXAMPLE\\alice", "Passw0rd"), ("example\\ALICE", "Passw0rd"), ("alice", "Passw0rd")],
)
def test_proxy_basic_good_credentials_pass_per_request(
    proxy: AuthProxy, origin: LoopbackServer, user: str, password: str
) -> None:
    with Conn(proxy) as conn:
        response, body = conn.request("GET", origin.url + "/echo", basic(user, password))
        assert response.status_code == 200
        assert "proxy-authorization" not in echoed_headers(body)
        # Basic does not authenticate the connection.
        assert conn.request("GET", origin.url + "/echo")[0].status_code == 407
    assert proxy.log[0].user == user
    assert proxy.log[0].scheme == "Basic"
    assert proxy.handshakes_started == proxy.handshakes_completed == 0
    assert proxy.connection_users() == {1: None}


def test_proxy_basic_non_ascii_user_without_domain(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as conn:
        assert conn.request("GET", origin.url, basic("zoë", "pässwörd"))[0].status_code == 200
        assert conn.request("GET", origin.url, basic("zoë", "passwörd"))[0].status_code == 407


@pytest.mark.parametrize(
    "value",
    [
        "Basic " + base64.b64encode(b"EXAMPLE\\alice:nope").decode(),
        "Basic " + base64.b64encode(b"EXAMPLE\\mallory:Passw0rd").decode(),
        "Basic " + base64.b64encode(b"OTHER\\alice:Passw0rd").decode(),
        "Basic " + base64.b64encode(b"EXAMPLE\\alice").decode(),
        "Basic !!!",
        "Bearer abc",
    ],
)
def test_proxy_basic_bad_credentials_are_407(
    proxy: AuthProxy, origin: LoopbackServer, value: str
) -> None:
    with Conn(proxy) as conn:
        response, body = conn.request("GET", origin.url, [("Proxy-Authorization", value)])
        assert response.status_code == 407
        assert body
        assert conn.request("GET", origin.url, basic(*ALICE))[0].status_code == 200
    assert origin.requests_total == 1
    assert proxy.log[0].error
    assert "nope" not in (proxy.log[0].error or "")


def test_proxy_basic_is_refused_when_not_offered(user_file: Path, origin: LoopbackServer) -> None:
    with AuthProxy(user_file=user_file, schemes=("NTLM",)) as proxy, Conn(proxy) as conn:
        assert conn.request("GET", origin.url, basic(*ALICE))[0].status_code == 407
        assert proxy.log[0].error == "scheme 'Basic' not offered"


def test_proxy_basic_with_hashed_user_file(tmp_path: Path, origin: LoopbackServer) -> None:
    hashed = write_user_file(tmp_path / "hashed.txt", USERS, store_hashes=True)
    with AuthProxy(user_file=hashed, schemes=("Basic",)) as proxy, Conn(proxy) as conn:
        assert conn.request("GET", origin.url, basic(*ALICE))[0].status_code == 200
        assert conn.request("GET", origin.url, basic("EXAMPLE\\alice", "x"))[0].status_code == 407


def digest_header(
    challenge: h11.Response,
    method: str,
    uri: str,
    user: str,
    password: str,
    nc: int = 1,
    realm: str = REALM,
) -> list[tuple[str, str]]:
    """RFC 7616 MD5 / qop=auth, computed by hand from the proxy's offer."""
    (offer,) = [v for v in header(challenge, "proxy-authenticate") if v.startswith("Digest ")]
    nonce = offer.split('nonce="')[1].split('"')[0]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    cnonce, count = "0a4f113b", f"{nc:08x}"
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    response = md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
    value = (
        f'Digest username="{user.replace(chr(92), chr(92) * 2)}", realm="{realm}", '
        f'nonce="{nonce}", uri="{uri}", qop=auth, nc={count}, cnonce="{cnonce}", '
        f'response="{response}", algorithm=MD5'
    )
    return [("Proxy-Authorization", value)]


def test_proxy_digest_good_wrong_and_replayed(user_file: Path, origin: LoopbackServer) -> None:
    url = origin.url + "/echo"
    with AuthProxy(user_file=user_file, schemes=("Digest",)) as proxy, Conn(proxy) as conn:
        offer, _ = conn.request("GET", url)
        assert offer.status_code == 407
        good = digest_header(offer, "GET", url, *ALICE)
        response, body = conn.request("GET", url, good)
        assert response.status_code == 200
        assert "proxy-authorization" not in echoed_headers(body)
        # The same nonce count again is a replay.
        assert conn.request("GET", url, good)[0].status_code == 407
        # The next count on the same nonce passes.
        assert (
            conn.request("GET", url, digest_header(offer, "GET", url, *ALICE, nc=2))[0].status_code
            == 200
        )
        wrong = digest_header(offer, "GET", url, ALICE[0], "nope", nc=3)
        assert conn.request("GET", url, wrong)[0].status_code == 407
        other_realm = digest_header(offer, "GET", url, *ALICE, nc=4, realm="x")
        assert conn.request("GET", url, other_realm)[0].status_code == 407
        assert proxy.log[-1].error == "Digest realm does not match"
        # A response computed for another URL does not authorize this one.
        other_uri = digest_header(offer, "GET", origin.url + "/", *ALICE, nc=5)
        assert conn.request("GET", url, other_uri)[0].status_code == 407
    assert origin.requests_total == 2
    assert proxy.log[-1].error == "Digest uri is not the request target"
    assert [r.user for r in proxy.log if r.status == 200] == ["EXAMPLE\\alice"] * 2


def test_proxy_digest_on_connect(user_file: Path, origin: LoopbackServer) -> None:
    authority = f"127.0.0.1:{origin.port}"
    with AuthProxy(user_file=user_file, schemes=("Digest",)) as proxy, Conn(proxy) as conn:
        offer, _ = conn.request("CONNECT", authority)
        good = digest_header(offer, "CONNECT", authority, *ALICE)
        assert conn.request("CONNECT", authority, good)[0].status_code == 200
        assert conn.tunnel_get("/", authority)[1] == b"Hello, world!"


# -- closing proxies -----------------------------------------------------------------------------


def test_proxy_close_after_challenge_needs_a_new_connection(
    user_file: Path, origin: LoopbackServer
) -> None:
    with AuthProxy(user_file=user_file, close_after_challenge=True) as proxy:
        with Conn(proxy) as conn:
            offer, body = conn.request("GET", origin.url)
            assert offer.status_code == 407
            assert body
            assert header(offer, "connection") == ["close"]
            assert header(offer, "proxy-connection") == ["close"]
            assert conn.peer_closed()
        # The client reconnects and starts the handshake at once; the challenge leg keeps
        # the connection, so the handshake completes on it.
        with Conn(proxy) as conn:
            final, _ = ntlm_handshake(conn, "CONNECT", f"127.0.0.1:{origin.port}")
            assert final.status_code == 200
        with Conn(proxy) as conn:
            refused, _ = conn.request("GET", origin.url, basic(ALICE[0], "nope"))
            assert refused.status_code == 407
            assert conn.peer_closed()
        assert proxy.connections_opened == 3
        assert proxy.handshakes_completed == 1


def test_proxy_close_mid_handshake_never_lets_ntlm_finish(
    user_file: Path, origin: LoopbackServer
) -> None:
    with AuthProxy(user_file=user_file, close_mid_handshake=True) as proxy:
        context = initiator(*ALICE)
        with Conn(proxy) as conn:
            challenge, _ = conn.request("GET", origin.url, proxy_auth("NTLM", context.step()))
            assert challenge.status_code == 407
            assert header(challenge, "connection") == ["close"]
            assert conn.peer_closed()
        with Conn(proxy) as conn:
            type3 = context.step(token_of(challenge, "NTLM"))
            assert conn.request("GET", origin.url, proxy_auth("NTLM", type3))[0].status_code == 407
        assert proxy.handshakes_completed == 0


def test_proxy_honours_client_close(proxy: AuthProxy, origin: LoopbackServer) -> None:
    with Conn(proxy) as conn:
        response, _ = conn.request(
            "GET", origin.url, [*basic(*ALICE), ("Proxy-Connection", "close")]
        )
        assert response.status_code == 200
        assert header(response, "connection") == ["close"]
        assert conn.peer_closed()
    with Conn(proxy) as conn:
        response, _ = conn.request("GET", origin.url, [("Connection", "close")])
        assert response.status_code == 407
        assert conn.peer_closed()


# -- forwarding ----------------------------------------------------------------------------------


def test_proxy_strips_hop_by_hop_headers_and_keeps_end_to_end_ones(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as conn:
        response, body = conn.request(
            "GET",
            origin.url + "/echo",
            [
                *basic(*ALICE),
                ("Proxy-Connection", "keep-alive"),
                ("Connection", "X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Authorization", "Origin-Scheme abc"),
                ("X-End-To-End", "yes"),
            ],
        )
    seen = echoed_headers(body)
    assert response.status_code == 200
    for name in ("proxy-authorization", "proxy-connection", "x-hop", "keep-alive"):
        assert name not in seen
    assert seen["authorization"] == "Origin-Scheme abc"  # the origin's credentials go on
    assert seen["x-end-to-end"] == "yes"
    assert seen["host"] == f"127.0.0.1:{origin.port}"
    assert "proxy-authorization" not in proxy.log[0].forwarded_headers


def test_proxy_forwards_bodies_and_streams_responses(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as conn:
        conn.send(
            h11.Request(
                method="POST",
                target=origin.url + "/echo",
                headers=[
                    ("Host", f"127.0.0.1:{origin.port}"),
                    ("Content-Length", "7"),
                    *basic(*ALICE),
                ],
            ),
            h11.Data(data=b"payload"),
            h11.EndOfMessage(),
        )
        body = b""
        while not isinstance(event := conn.h11.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                conn.h11.receive_data(conn.sock.recv(65536))
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
        conn.h11.start_next_cycle()
        assert json.loads(body)["body"] == "payload"
        response, streamed = conn.request(
            "GET", origin.url + "/stream?chunks=3&size=5", basic(*ALICE)
        )
        assert response.status_code == 200
        assert streamed == b"x" * 15


def test_proxy_origin_ntlm_through_the_proxy_is_connection_bound_on_both_hops(
    user_file: Path,
) -> None:
    """Proxy Basic plus origin NTLM: the origin handshake needs the proxy to keep one
    upstream connection per client connection."""
    with (
        AuthProxy(user_file=user_file, schemes=("Basic",)) as proxy,
        IISLikeServer(user_file=user_file, schemes=("NTLM",)) as iis,
        Conn(proxy) as conn,
    ):
        url = iis.url + "/data"
        context = initiator(*ALICE)
        origin_auth = [("Authorization", f"NTLM {base64.b64encode(context.step()).decode()}")]
        first, _ = conn.request("GET", url, [*basic(*ALICE), *origin_auth])
        assert first.status_code == 401
        (challenge,) = [v for k, v in first.headers if k == b"www-authenticate"]
        type3 = context.step(base64.b64decode(challenge.split(b" ")[1]))
        origin_auth = [("Authorization", f"NTLM {base64.b64encode(type3).decode()}")]
        final, body = conn.request("GET", url, [*basic(*ALICE), *origin_auth])
        assert final.status_code == 200
        assert json.loads(body)["user"] == "EXAMPLE\\alice"
        later, body = conn.request("GET", url, basic(*ALICE))
        assert later.status_code == 200
        assert json.loads(body)["handshake"] is False
        assert iis.connections_opened == 1
        assert proxy.upstream_connections_opened == 1
        assert iis.handshakes_completed == 1


def test_proxy_separate_client_connections_get_separate_upstreams(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    with Conn(proxy) as one, Conn(proxy) as two:
        for conn in (one, two, one, two):
            assert conn.request("GET", origin.url + "/", basic(*ALICE))[0].status_code == 200
    assert proxy.upstream_connections_opened == 2
    assert origin.connections_opened == 2


def test_proxy_origin_going_away_is_502_and_reset_clears_counters(
    proxy: AuthProxy, user_file: Path
) -> None:
    with LoopbackServer() as gone:
        port = gone.port
    with Conn(proxy) as conn:
        response, _ = conn.request("GET", f"http://127.0.0.1:{port}/", basic(*ALICE))
        assert response.status_code == 502
    assert proxy.requests_total == 1
    proxy.reset()
    assert (proxy.requests_total, proxy.challenges_sent, len(proxy.log)) == (0, 0, 0)


# -- HTTPS proxy and channel binding -------------------------------------------------------------


@pytest.fixture
def https_proxy(user_file: Path, proxy_ssl: ssl.SSLContext) -> Iterator[AuthProxy]:
    yield from serve(
        AuthProxy(
            user_file=user_file,
            schemes=("NTLM", "Basic"),
            ssl_context=proxy_ssl,
            require_channel_binding=True,
        )
    )


def test_proxy_https_with_channel_binding(
    https_proxy: AuthProxy, origin: LoopbackServer, client_ssl_context: ssl.SSLContext
) -> None:
    assert https_proxy.url.startswith("https://")
    with Conn(https_proxy, client_ssl_context) as conn:
        assert isinstance(conn.sock, ssl.SSLSocket)
        certificate = conn.sock.getpeercert(True)
        assert certificate == https_proxy.certificate_der
        bindings = channel_bindings_for(certificate)
        final, _ = ntlm_handshake(conn, "CONNECT", f"127.0.0.1:{origin.port}", bindings=bindings)
        assert final.status_code == 200
        assert conn.tunnel_get("/", f"127.0.0.1:{origin.port}")[1] == b"Hello, world!"
    assert https_proxy.log[-1].channel_binding == "match"


@pytest.mark.parametrize("binding", ["missing", "wrong"])
def test_proxy_https_refuses_missing_or_wrong_binding(
    https_proxy: AuthProxy,
    origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
    binding: str,
) -> None:
    bindings = (
        None
        if binding == "missing"
        else GssChannelBindings(application_data=b"tls-server-end-point:" + b"\x01" * 32)
    )
    with Conn(https_proxy, client_ssl_context) as conn:
        final, _ = ntlm_handshake(conn, "GET", origin.url, bindings=bindings)
        assert final.status_code == 407
    assert https_proxy.log[-1].channel_binding == ("none" if binding == "missing" else "mismatch")
    assert https_proxy.handshakes_completed == 0
    assert origin.requests_total == 0


# -- stock httpx, end to end ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_proxy_stock_httpx_basic_forward(proxy: AuthProxy, origin: LoopbackServer) -> None:
    proxy_url = proxy.url.replace("http://", "http://EXAMPLE%5Calice:Passw0rd@")
    async with httpx.AsyncClient(proxy=proxy_url) as client:
        for _ in range(3):
            response = await client.get(origin.url + "/echo")
            assert response.status_code == 200
            assert "proxy-authorization" not in echoed_headers(response.content)
    async with httpx.AsyncClient(proxy=proxy.url) as client:
        response = await client.get(origin.url + "/echo")
        assert response.status_code == 407
        assert b"407 - Proxy Authentication Required" in response.content
    assert [r.user for r in proxy.log] == ["EXAMPLE\\alice"] * 3 + [None]
    assert proxy.requests_forwarded == 3
    assert proxy.connections_opened == 2


# -- Kerberos through the suite's KDC ------------------------------------------------------------

KERBEROS_REALM = "HTTPX-EXT.TEST"
KERBEROS_ALICE = f"alice@{KERBEROS_REALM}"


@pytest.fixture
def kdc() -> Iterator[Any]:
    """A realm with alice's TGT in the default ccache, for this test only (the KDC owns the
    process-wide KRB5_* variables while it runs)."""
    try:
        from tests.servers.kdc import LoopbackKDC, kerberos_unavailable
    except ImportError:  # tests/ on sys.path
        from servers.kdc import (  # type: ignore[no-redef,import-not-found,unused-ignore]
            LoopbackKDC,
            kerberos_unavailable,
        )
    reason = kerberos_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with LoopbackKDC(realm=KERBEROS_REALM, users={"alice": "Al1ce-pw"}) as realm:
        realm.kinit("alice")
        yield realm


def kerberos_initiator(bindings: GssChannelBindings | None = None) -> spnego.ContextProxy:
    # The realm has HTTP/localhost only: the SPN names localhost although the proxy
    # listens on 127.0.0.1, as NegotiateAuth(hostname="localhost") would.
    return spnego.client(
        hostname="localhost", service="HTTP", protocol="negotiate", channel_bindings=bindings
    )


def kerberos_leg(
    conn: Conn, method: str, target: str, bindings: GssChannelBindings | None = None
) -> h11.Response:
    """Kerberos needs one leg after the offer: the AP-REQ, answered with the AP-REP."""
    context = kerberos_initiator(bindings)
    response, _ = conn.request(method, target, proxy_auth("Negotiate", context.step()))
    if response.status_code == 200:
        assert context.step(token_of(response, "Negotiate")) is None  # mutual auth
        assert context.complete
    return response


def test_proxy_kerberos_single_sign_on_binds_the_connection(
    kdc: Any, user_file: Path, origin: LoopbackServer
) -> None:
    with AuthProxy(user_file=user_file, schemes=("Negotiate",)) as proxy, Conn(proxy) as conn:
        assert conn.request("GET", origin.url)[0].status_code == 407
        assert kerberos_leg(conn, "GET", origin.url + "/").status_code == 200
        assert conn.request("CONNECT", f"127.0.0.1:{origin.port}")[0].status_code == 200
        assert conn.tunnel_get("/", f"127.0.0.1:{origin.port}")[1] == b"Hello, world!"
    assert [(r.status, r.mechanism, r.user) for r in proxy.log] == [
        (407, None, None),
        (200, "kerberos", KERBEROS_ALICE),
        (200, "kerberos", KERBEROS_ALICE),
    ]
    assert all(r.ntlm_message is None for r in proxy.log)
    assert proxy.handshakes_started == proxy.handshakes_completed == 1


def test_proxy_kerberos_https_channel_binding_required(
    kdc: Any,
    user_file: Path,
    origin: LoopbackServer,
    proxy_ssl: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    with AuthProxy(
        user_file=user_file,
        schemes=("Negotiate",),
        ssl_context=proxy_ssl,
        require_channel_binding=True,
    ) as proxy:
        authority = f"127.0.0.1:{origin.port}"
        with Conn(proxy, client_ssl_context) as conn:
            assert kerberos_leg(conn, "CONNECT", authority).status_code == 407
        assert proxy.log[-1].error == "Kerberos authenticator carries no channel binding"
        with Conn(proxy, client_ssl_context) as conn:
            assert isinstance(conn.sock, ssl.SSLSocket)
            bindings = channel_bindings_for(conn.sock.getpeercert(True))
            assert kerberos_leg(conn, "CONNECT", authority, bindings).status_code == 200
        assert proxy.log[-1].channel_binding == "match"
        assert proxy.handshakes_completed == 1


def test_proxy_user_file_environment_is_owned_only_with_an_acceptor(
    user_file: Path, tmp_path: Path, origin: LoopbackServer
) -> None:
    other = write_user_file(tmp_path / "other.txt", [("OTHER", "carol", "pw")])
    with IISLikeServer(user_file=other):
        # NTLM_USER_FILE is process-wide: an NTLM proxy with another file cannot run now...
        with pytest.raises(RuntimeError, match="NTLM_USER_FILE is process-wide"):
            AuthProxy(user_file=user_file, schemes=("NTLM",)).start()
        # ...but a Basic-only proxy reads its file itself and leaves the variable alone.
        with AuthProxy(user_file=user_file, schemes=("Basic",)) as proxy, Conn(proxy) as conn:
            assert conn.request("GET", origin.url, basic(*ALICE))[0].status_code == 200


def test_proxy_tunnel_passes_bytes_sent_right_after_connect(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    """A client may send its first tunnelled bytes (a TLS ClientHello) together with the
    CONNECT head; they must reach the origin, not be lost in the proxy's parser buffer."""
    authority = f"127.0.0.1:{origin.port}"
    (credentials,) = basic(*ALICE)
    with Conn(proxy) as conn:
        conn.sock.sendall(
            f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            f"{credentials[0]}: {credentials[1]}\r\n\r\n"
            f"GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := conn.sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 Connection established\r\n")
    assert data.endswith(b"Hello, world!")
    assert proxy.tunnels_opened == 1


def test_proxy_mirrors_an_origin_close(proxy: AuthProxy, origin: LoopbackServer) -> None:
    with Conn(proxy) as conn:
        closing, body = conn.request("GET", origin.url + "/close", basic(*ALICE))
        assert (closing.status_code, body) == (200, b"closing")
        assert header(closing, "connection") == ["close"]
        assert conn.peer_closed()


def test_proxy_reconnects_to_an_origin_that_closed_while_idle(proxy: AuthProxy) -> None:
    with LoopbackServer(idle_timeout=0.05) as origin, Conn(proxy) as conn:
        assert conn.request("GET", origin.url + "/", basic(*ALICE))[0].status_code == 200
        wait_until(lambda: origin.open_connections == 0)  # it dropped the idle upstream
        again, body = conn.request("GET", origin.url + "/", basic(*ALICE))
        assert (again.status_code, body) == (200, b"Hello, world!")
        assert origin.connections_opened == 2
    assert proxy.upstream_connections_opened == 2
    assert proxy.connections_opened == 1


def test_proxy_drops_the_upstream_when_the_client_leaves_mid_request(
    proxy: AuthProxy, origin: LoopbackServer
) -> None:
    conn = Conn(proxy)
    conn.send(
        h11.Request(
            method="GET",
            target=origin.url + "/hang",
            headers=[("Host", f"127.0.0.1:{origin.port}"), *basic(*ALICE)],
        ),
        h11.EndOfMessage(),
    )
    wait_until(lambda: origin.requests_total == 1)  # the request reached the origin
    conn.close()
    # The proxy sees the client go and closes its hop, so the origin's /hang ends.
    wait_until(lambda: origin.open_connections == 0)
    assert proxy.requests_forwarded == 1


@pytest.mark.anyio
async def test_proxy_stock_httpx_basic_connect_to_an_https_origin(
    proxy: AuthProxy, https_server: LoopbackServer, client_ssl_context: ssl.SSLContext
) -> None:
    via = httpx.Proxy(proxy.url, auth=ALICE)
    async with httpx.AsyncClient(proxy=via, verify=client_ssl_context) as client:
        for _ in range(2):
            response = await client.get(https_server.url + "/echo")
            assert response.status_code == 200
            assert not any(name.startswith("proxy-") for name in echoed_headers(response.content))
    assert proxy.tunnels_opened == 1  # httpx keeps the tunnel for the second request
    assert [(r.kind, r.status, r.user) for r in proxy.log] == [("connect", 200, "EXAMPLE\\alice")]


def test_proxy_ipv6_loopback(user_file: Path) -> None:
    try:
        origin = LoopbackServer(host="::1").start()
    except RuntimeError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        with AuthProxy(user_file=user_file, host="::1") as proxy, Conn(proxy) as conn:
            assert proxy.url.startswith("http://[::1]:")
            forwarded, _ = conn.request("GET", f"http://[::1]:{origin.port}/", basic(*ALICE))
            assert forwarded.status_code == 200
            tunnel, _ = conn.request("CONNECT", f"[::1]:{origin.port}", basic(*ALICE))
            assert tunnel.status_code == 200
            assert conn.tunnel_get("/", f"[::1]:{origin.port}")[1] == b"Hello, world!"
    finally:
        origin.stop()


def test_proxy_head_407_has_no_body(proxy: AuthProxy, origin: LoopbackServer) -> None:
    with Conn(proxy) as conn:
        response, body = conn.request("HEAD", origin.url + "/")
        assert response.status_code == 407
        assert body == b""
        assert int(header(response, "content-length")[0]) > 0
        # Framing stayed in step: the next exchange on the connection parses cleanly.
        assert conn.request("GET", origin.url + "/", basic(*ALICE))[1] == b"Hello, world!"
