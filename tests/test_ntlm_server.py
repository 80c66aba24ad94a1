"""Self-tests for the IIS-like NTLM/Negotiate server (tests/servers/ntlm.py).

The client tests will trust this server to reject every handshake a real IIS would reject,
so its behaviour is pinned here with pyspnego's own *initiator* and hand-written handshakes
over the stock httpx client (which keeps sequential requests on one connection) and raw
sockets, independent of the library under test.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import h11
import httpx
import pytest
import spnego
import spnego._ntlm
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from spnego.channel_bindings import GssChannelBindings

try:
    from tests.servers import IISLikeServer, write_user_file
    from tests.servers.ntlm import channel_bindings_for, ntlm_message_type, tls_server_end_point
except ImportError:  # tests/ on sys.path (pytest rootdir-less "prepend" import mode)
    from servers import IISLikeServer, write_user_file  # type: ignore[no-redef,import-not-found,unused-ignore]
    from servers.ntlm import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        channel_bindings_for,
        ntlm_message_type,
        tls_server_end_point,
    )

USERS = [
    ("EXAMPLE", "alice", "Passw0rd"),
    ("EXAMPLE", "bob", "S3cret!"),
    ("", "zoë", "pässwörd"),
    ("", "юзер", "пароль密码"),
]
ALICE = ("EXAMPLE\\alice", "Passw0rd")
FRESH_OFFERS = ["Negotiate", "NTLM"]

Bind = Callable[[httpx.Response], "GssChannelBindings | None"]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("ntlm") / "users.txt", USERS)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _serve(server: IISLikeServer) -> Iterator[IISLikeServer]:
    with server as srv:
        yield srv
    assert srv.errors == []


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    yield from _serve(IISLikeServer(user_file=user_file))


@pytest.fixture
def iis_per_request(user_file: Path) -> Iterator[IISLikeServer]:
    yield from _serve(IISLikeServer(user_file=user_file, auth_per_request=True))


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as c:
        yield c


# -- a hand-written client side --------------------------------------------------------------


def auth_header(scheme: str, token: bytes | None) -> dict[str, str]:
    assert token is not None
    return {"Authorization": f"{scheme} {base64.b64encode(token).decode()}"}


def server_token(response: httpx.Response, scheme: str) -> bytes:
    """The token of the one ``WWW-Authenticate: <scheme> <token>`` header."""
    values = response.headers.get_list("www-authenticate")
    tokens = [v.split(" ", 1)[1] for v in values if v.lower().startswith(scheme.lower() + " ")]
    assert len(tokens) == 1, values
    return base64.b64decode(tokens[0])


def initiator(user: str, password: str, protocol: str = "ntlm") -> spnego.ContextProxy:
    return spnego.client(user, password, hostname="127.0.0.1", service="HTTP", protocol=protocol)


def tls_bindings(response: httpx.Response) -> GssChannelBindings:
    """Bindings from the certificate on the connection that carried ``response``."""
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    return channel_bindings_for(ssl_object.getpeercert(True))


def handshake(
    client: httpx.Client,
    url: str,
    user: str = ALICE[0],
    password: str = ALICE[1],
    *,
    scheme: str = "NTLM",
    protocol: str | None = None,
    method: str = "GET",
    content: bytes | None = None,
    bind: Bind | None = None,
) -> httpx.Response:
    """Both legs on the client's single connection; processes a final Negotiate token."""
    context = initiator(user, password, protocol or scheme.lower())
    first = client.request(
        method, url, headers=auth_header(scheme, context.step()), content=content
    )
    assert first.status_code == 401
    bindings = bind(first) if bind is not None else None
    type3 = context.step(server_token(first, scheme), channel_bindings=bindings)
    final = client.request(method, url, headers=auth_header(scheme, type3), content=content)
    assert final.headers["x-conn-seq"] == first.headers["x-conn-seq"]
    if final.status_code == 200 and context.protocol == "negotiate":
        assert not context.complete  # pyspnego's SPNEGO initiator needs the final token
        assert context.step(server_token(final, scheme)) is None
        assert context.complete
    return final


# -- basic legs ------------------------------------------------------------------------------


def test_anonymous_request_offers_negotiate_then_ntlm(
    iis: IISLikeServer, client: httpx.Client
) -> None:
    response = client.get(iis.url + "/anything?x=1")
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == FRESH_OFFERS
    assert response.headers["content-type"] == "text/html"
    assert b"401 - Unauthorized" in response.content  # a body the client has to drain
    assert response.headers["x-conn-seq"] == "1"
    (record,) = iis.log
    assert (record.path, record.scheme, record.status, record.user) == (
        "/anything?x=1",
        None,
        401,
        None,
    )


@pytest.mark.parametrize(
    ("schemes", "offers"),
    [
        (("NTLM",), ["NTLM"]),
        (("ntlm", "negotiate"), ["NTLM", "Negotiate"]),
        (("Negotiate",), ["Negotiate"]),
    ],
)
def test_schemes_option_chooses_offers(
    user_file: Path, client: httpx.Client, schemes: tuple[str, ...], offers: list[str]
) -> None:
    with IISLikeServer(user_file=user_file, schemes=schemes) as srv:
        assert client.get(srv.url).headers.get_list("www-authenticate") == offers


def test_scheme_not_offered_is_refused(user_file: Path, client: httpx.Client) -> None:
    with IISLikeServer(user_file=user_file, schemes=("Negotiate",)) as srv:
        response = client.get(srv.url, headers=auth_header("NTLM", initiator(*ALICE).step()))
        assert response.status_code == 401
        assert response.headers.get_list("www-authenticate") == ["Negotiate"]
        assert srv.log[-1].error == "scheme 'NTLM' not offered"


def test_ntlm_handshake_legs_and_persistent_connection(
    iis: IISLikeServer, client: httpx.Client
) -> None:
    context = initiator(*ALICE)
    type1 = context.step()
    assert type1 is not None
    assert type1.startswith(b"NTLMSSP\x00\x01\x00\x00\x00")
    leg1 = client.get(iis.url + "/leg", headers=auth_header("NTLM", type1))
    assert leg1.status_code == 401
    assert len(leg1.headers.get_list("www-authenticate")) == 1  # only the challenge
    type2 = server_token(leg1, "NTLM")
    assert ntlm_message_type(type2) == 2
    assert iis.connection_users() == {1: None}

    type3 = context.step(type2)
    leg2 = client.get(iis.url + "/leg", headers=auth_header("NTLM", type3))
    assert leg2.status_code == 200
    assert "www-authenticate" not in leg2.headers  # raw NTLM has no final token
    assert leg2.json() == {
        "user": "EXAMPLE\\alice",
        "conn": 1,
        "path": "/leg",
        "method": "GET",
        "body_length": 0,
        "handshake": True,
        "scheme": "NTLM",
    }
    assert iis.connection_users() == {1: "EXAMPLE\\alice"}

    # IIS default: the connection stays authenticated without an Authorization header.
    later = client.get(iis.url + "/later")
    assert later.status_code == 200
    assert later.json()["handshake"] is False
    assert later.json()["user"] == "EXAMPLE\\alice"

    assert [(r.scheme, r.ntlm_message, r.status, r.handshake) for r in iis.log] == [
        ("NTLM", 1, 401, False),
        ("NTLM", 3, 200, True),
        (None, None, 200, False),
    ]
    assert type3 is not None
    assert [r.token_length for r in iis.log] == [len(type1), len(type3), 0]
    assert iis.handshakes_completed == 1


def test_wrong_password_gets_fresh_401_and_context_resets(
    iis: IISLikeServer, client: httpx.Client
) -> None:
    response = handshake(client, iis.url, "EXAMPLE\\alice", "wrong")
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == FRESH_OFFERS
    assert "Invalid NTLM response" in (iis.log[-1].error or "")
    assert iis.connection_users() == {1: None}
    assert iis.handshakes_completed == 0
    # The failed context is gone: the same connection can start a new handshake.
    assert handshake(client, iis.url).status_code == 200
    assert iis.connections_opened == 1


@pytest.mark.parametrize("user", ["alice", "EXAMPLE\\nobody", "OTHER\\alice", "alice@EXAMPLE"])
def test_unknown_account_is_refused(iis: IISLikeServer, client: httpx.Client, user: str) -> None:
    # pyspnego matches DOMAIN and USER case-insensitively but exactly: no default domain.
    assert handshake(client, iis.url, user, "Passw0rd").status_code == 401
    assert "Failed to find any matching credential" in (iis.log[-1].error or "")


def test_user_is_reported_as_the_client_spelled_it(
    iis: IISLikeServer, client: httpx.Client
) -> None:
    response = handshake(client, iis.url, "example\\ALICE", "Passw0rd")
    assert response.json()["user"] == "example\\ALICE"


@pytest.mark.parametrize(
    ("user", "password"), [("zoë", "pässwörd"), ("ZOË", "pässwörd"), ("юзер", "пароль密码")]
)
@pytest.mark.parametrize("scheme", ["NTLM", "Negotiate"])
def test_non_ascii_user_and_password(
    iis: IISLikeServer, client: httpx.Client, user: str, password: str, scheme: str
) -> None:
    response = handshake(client, iis.url, user, password, scheme=scheme)
    assert response.status_code == 200
    assert response.json()["user"] == user
    assert iis.connection_users() == {1: user}
    assert handshake(client, iis.url, user, password + "x", scheme=scheme).status_code == 401


def test_type3_on_another_connection_fails(iis: IISLikeServer) -> None:
    context = initiator(*ALICE)
    with httpx.Client() as first, httpx.Client() as second:
        leg1 = first.get(iis.url, headers=auth_header("NTLM", context.step()))
        type3 = context.step(server_token(leg1, "NTLM"))
        stolen = second.get(iis.url, headers=auth_header("NTLM", type3))
        assert stolen.status_code == 401
        assert stolen.headers.get_list("www-authenticate") == FRESH_OFFERS
        assert iis.log[-1].error == "no handshake in progress on this connection for this scheme"
        assert {r.conn_seq for r in iis.log} == {1, 2}
        # The challenged connection still waits for its type 3.
        assert first.get(iis.url, headers=auth_header("NTLM", type3)).status_code == 200
    assert iis.connection_users() == {1: "EXAMPLE\\alice", 2: None}


def test_anonymous_request_abandons_pending_handshake(
    iis: IISLikeServer, client: httpx.Client
) -> None:
    context = initiator(*ALICE)
    leg1 = client.get(iis.url, headers=auth_header("NTLM", context.step()))
    assert client.get(iis.url).status_code == 401
    type3 = context.step(server_token(leg1, "NTLM"))
    assert client.get(iis.url, headers=auth_header("NTLM", type3)).status_code == 401


def test_new_type1_restarts_an_authenticated_connection(
    iis: IISLikeServer, client: httpx.Client
) -> None:
    assert handshake(client, iis.url).status_code == 200
    leg1 = client.get(iis.url, headers=auth_header("NTLM", initiator(*ALICE).step()))
    assert leg1.status_code == 401
    assert iis.connection_users() == {1: None}
    assert client.get(iis.url).status_code == 401


def test_per_request_mode_needs_a_handshake_every_time(
    iis_per_request: IISLikeServer, client: httpx.Client
) -> None:
    srv = iis_per_request
    assert handshake(client, srv.url + "/one").status_code == 200
    anonymous = client.get(srv.url + "/two")
    assert anonymous.status_code == 401
    assert anonymous.headers.get_list("www-authenticate") == FRESH_OFFERS
    again = handshake(client, srv.url + "/three", "EXAMPLE\\bob", "S3cret!")
    assert again.json()["user"] == "EXAMPLE\\bob"
    assert srv.connection_users() == {1: None}
    assert srv.handshakes_completed == 2
    assert srv.connections_opened == 1


@pytest.mark.parametrize(
    "garbage",
    ["NTLM", "NTLM !!notbase64!!", "NTLM " + base64.b64encode(b"garbage").decode(), "Basic YTpi"],
)
def test_malformed_authorization_is_a_401_not_a_server_error(
    iis: IISLikeServer, client: httpx.Client, garbage: str
) -> None:
    response = client.get(iis.url, headers={"Authorization": garbage})
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == FRESH_OFFERS
    assert iis.log[-1].error


# -- Negotiate (SPNEGO) ----------------------------------------------------------------------


def test_negotiate_wraps_ntlm_and_sends_a_final_token(
    iis: IISLikeServer, client: httpx.Client
) -> None:
    context = initiator(*ALICE, protocol="negotiate")
    token1 = context.step()
    assert token1 is not None
    assert token1[0] == 0x60  # GSS InitialContextToken
    leg1 = client.get(iis.url, headers=auth_header("Negotiate", token1))
    assert leg1.status_code == 401
    challenge = server_token(leg1, "Negotiate")
    assert challenge[0] == 0xA1  # NegTokenResp
    assert ntlm_message_type(challenge) == 2
    leg2 = client.get(iis.url, headers=auth_header("Negotiate", context.step(challenge)))
    assert leg2.status_code == 200
    assert leg2.json()["scheme"] == "Negotiate"
    final = server_token(leg2, "Negotiate")  # accept-completed + mechListMIC
    assert not context.complete
    context.step(final)
    assert context.complete
    assert [r.ntlm_message for r in iis.log] == [1, 3]
    assert client.get(iis.url).json()["user"] == "EXAMPLE\\alice"


def test_negotiate_header_with_raw_ntlm_tokens(iis: IISLikeServer, client: httpx.Client) -> None:
    # Some clients put bare NTLMSSP messages in a Negotiate header; IIS accepts that too.
    response = handshake(client, iis.url, scheme="Negotiate", protocol="ntlm")
    assert response.status_code == 200
    assert "www-authenticate" not in response.headers
    leg1 = client.get(iis.url, headers=auth_header("Negotiate", initiator(*ALICE).step()))
    assert server_token(leg1, "Negotiate").startswith(b"NTLMSSP\x00\x02\x00\x00\x00")


def test_switching_scheme_mid_handshake_fails(iis: IISLikeServer, client: httpx.Client) -> None:
    context = initiator(*ALICE)
    leg1 = client.get(iis.url, headers=auth_header("NTLM", context.step()))
    type3 = context.step(server_token(leg1, "NTLM"))
    assert client.get(iis.url, headers=auth_header("Negotiate", type3)).status_code == 401


# -- bodies and paths ------------------------------------------------------------------------


def test_request_bodies_with_content_length_and_chunked(
    iis: IISLikeServer, client: httpx.Client
) -> None:
    response = handshake(client, iis.url + "/upload", method="POST", content=b"x" * 3000)
    assert response.json()["body_length"] == 3000
    assert response.json()["method"] == "POST"

    def chunks() -> Iterator[bytes]:
        yield b"a" * 10
        yield b"b" * 20

    chunked = client.post(iis.url + "/upload", content=chunks())
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert chunked.json()["body_length"] == 30
    assert chunked.json()["conn"] == 1


def raw_exchange(port: int, request: bytes) -> tuple[h11.Response, bytes]:
    """Send one request on a fresh socket, read until the server closes; return the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # returns b"" only when the server closes
            data += chunk
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    response = conn.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while isinstance(event := conn.next_event(), h11.Data):
        body += event.data
    return response, body


@pytest.mark.parametrize("announce", [False, True])
def test_close_after_challenge(iis: IISLikeServer, client: httpx.Client, announce: bool) -> None:
    context = initiator(*ALICE)
    path = "/close-after-challenge" + ("?announce=1" if announce else "")
    type1 = base64.b64encode(context.step() or b"").decode()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: NTLM {type1}\r\n\r\n"
    response, body = raw_exchange(iis.port, request.encode())
    headers = {k.decode().lower(): v.decode() for k, v in response.headers}
    assert response.status_code == 401
    assert body.startswith(b"<!DOCTYPE html>")
    assert headers["www-authenticate"].startswith("NTLM TlRMTVNTUAACAAAA")
    assert ("connection" in headers) is announce
    # The challenge died with its connection: a type 3 on a new one is refused.
    type2 = base64.b64decode(headers["www-authenticate"].split(" ", 1)[1])
    late = client.get(iis.url + path, headers=auth_header("NTLM", context.step(type2)))
    assert late.status_code == 401
    assert late.headers["x-conn-seq"] == "2"
    assert iis.log[-1].error == "no handshake in progress on this connection for this scheme"
    # An authenticated connection is served on the path like on any other.
    assert handshake(client, iis.url).status_code == 200
    assert client.get(iis.url + path).json()["user"] == "EXAMPLE\\alice"


# -- channel binding -------------------------------------------------------------------------


def https_server(
    user_file: Path, server_ssl: ssl.SSLContext, *, require_channel_binding: bool = False
) -> IISLikeServer:
    return IISLikeServer(
        user_file=user_file,
        ssl_context=server_ssl,
        require_channel_binding=require_channel_binding,
    )


def wrong_bindings(response: httpx.Response) -> GssChannelBindings:
    return GssChannelBindings(application_data=b"tls-server-end-point:" + bytes(32))


def no_bindings(response: httpx.Response) -> None:
    return None


@pytest.mark.parametrize("scheme", ["NTLM", "Negotiate"])
def test_required_channel_binding(
    user_file: Path,
    server_ssl: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
    scheme: str,
) -> None:
    with https_server(user_file, server_ssl, require_channel_binding=True) as srv:
        assert srv.url.startswith("https://")
        with httpx.Client(verify=client_ssl) as client:
            for bind, status, seen, error in [
                (no_bindings, 401, "none", "not present in initiator response"),
                (wrong_bindings, 401, "mismatch", "do not match initiator bindings"),
                (tls_bindings, 200, "match", None),
            ]:
                response = handshake(client, srv.url, scheme=scheme, bind=bind)
                assert response.status_code == status
                record = srv.log[-1]
                assert record.channel_binding == seen
                if error is None:
                    assert record.error is None
                else:
                    assert error in (record.error or "")  # pyspnego's BadBindingsError
                    assert response.headers.get_list("www-authenticate") == FRESH_OFFERS
        assert srv.errors == []


def test_expected_bindings_are_those_of_the_served_certificate(
    user_file: Path, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    with https_server(user_file, server_ssl) as srv, httpx.Client(verify=client_ssl) as client:
        response = client.get(srv.url)
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        assert srv.certificate_der == ssl_object.getpeercert(True)
        assert srv.channel_bindings == tls_bindings(response)
        assert srv.connections_opened == 1  # finding the certificate used no socket


def test_all_zero_binding_is_rejected_only_when_required(
    user_file: Path,
    server_ssl: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows sends 16 zero bytes when it has no binding; pyspnego's acceptor accepts that."""
    for required, status in [(True, 401), (False, 200)]:
        with (
            https_server(user_file, server_ssl, require_channel_binding=required) as srv,
            httpx.Client(verify=client_ssl) as client,
        ):
            context = initiator(*ALICE)
            leg1 = client.get(srv.url, headers=auth_header("NTLM", context.step()))
            with monkeypatch.context() as patch:
                patch.setattr(spnego._ntlm, "md5", lambda data: bytes(16))
                type3 = context.step(
                    server_token(leg1, "NTLM"), channel_bindings=tls_bindings(leg1)
                )
            response = client.get(srv.url, headers=auth_header("NTLM", type3))
            assert response.status_code == status
            assert srv.log[-1].channel_binding == "zero"


def test_binding_not_required_accepts_any(
    user_file: Path, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # Like IIS with Extended Protection off: the binding is recorded, never checked.
    with https_server(user_file, server_ssl) as srv, httpx.Client(verify=client_ssl) as client:
        for bind, seen in [
            (no_bindings, "none"),
            (wrong_bindings, "mismatch"),
            (tls_bindings, "match"),
        ]:
            assert handshake(client, srv.url, bind=bind).status_code == 200
            assert srv.log[-1].channel_binding == seen


def test_binding_over_plain_http_is_a_mismatch(iis: IISLikeServer, client: httpx.Client) -> None:
    assert handshake(client, iis.url, bind=wrong_bindings).status_code == 200
    assert iis.log[-1].channel_binding == "mismatch"
    assert iis.channel_bindings is None
    assert iis.certificate_der is None


def _self_signed(sign: Callable[[x509.CertificateBuilder], x509.Certificate]) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopback")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    return sign(builder).public_bytes(Encoding.DER)


def test_tls_server_end_point_hash_follows_rfc_5929(ca: trustme.CA) -> None:
    ec_key = ec.generate_private_key(ec.SECP384R1())
    sha384 = _self_signed(lambda b: b.public_key(ec_key.public_key()).sign(ec_key, hashes.SHA384()))
    assert tls_server_end_point(sha384) == hashlib.sha384(sha384).digest()
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed = _self_signed(lambda b: b.public_key(ed_key.public_key()).sign(ed_key, None))
    assert tls_server_end_point(ed) == hashlib.sha256(ed).digest()  # no signature hash
    pem = ca.issue_cert("127.0.0.1").cert_chain_pems[0].bytes()
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    assert tls_server_end_point(der) == hashlib.sha256(der).digest()
    assert channel_bindings_for(der).application_data == (
        b"tls-server-end-point:" + hashlib.sha256(der).digest()
    )


# -- configuration, counters, secrecy --------------------------------------------------------


def test_constructor_validation(user_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="require_channel_binding"):
        IISLikeServer(user_file=user_file, require_channel_binding=True)
    with pytest.raises(ValueError, match="schemes"):
        IISLikeServer(user_file=user_file, schemes=("Basic",))
    with pytest.raises(FileNotFoundError):
        IISLikeServer(user_file=tmp_path / "missing.txt")


@pytest.mark.parametrize(
    "users",
    [
        [("", "a:b", "pw")],
        [("", "a", "p:w")],
        [("", "a", "p\nw")],
        [("", "DOM\\a", "pw")],
        [("", "", "pw")],
    ],
)
def test_write_user_file_rejects_what_pyspnego_would_skip(
    tmp_path: Path, users: list[tuple[str, str, str]]
) -> None:
    with pytest.raises(ValueError):
        write_user_file(tmp_path / "users.txt", users)


def test_user_file_is_utf8_and_hashed_form_logs_on_the_same(
    tmp_path: Path, client: httpx.Client
) -> None:
    plain = write_user_file(tmp_path / "plain.txt", USERS)
    assert plain.read_bytes().splitlines()[2] == ":zoë:pässwörd".encode()
    hashed = write_user_file(tmp_path / "hashed.txt", USERS, store_hashes=True)
    assert "pässwörd" not in hashed.read_text(encoding="utf-8")
    with IISLikeServer(user_file=hashed) as srv:
        for domain, user, password in USERS:
            account = f"{domain}\\{user}" if domain else user
            assert handshake(client, srv.url, account, password).json()["user"] == account
        assert handshake(client, srv.url, "zoë", "nope").status_code == 401


def test_user_file_env_is_owned_while_running(
    user_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NTLM_USER_FILE", "previous-value")
    other = write_user_file(tmp_path / "other.txt", USERS[:1])
    with IISLikeServer(user_file=user_file) as first:
        assert os.environ["NTLM_USER_FILE"] == str(user_file.resolve())
        with IISLikeServer(user_file=user_file) as second:  # same file: shared
            assert second.port != first.port
        assert os.environ["NTLM_USER_FILE"] == str(user_file.resolve())
        with pytest.raises(RuntimeError, match="process-wide"):
            IISLikeServer(user_file=other).start()
        with httpx.Client() as client:
            assert handshake(client, first.url).status_code == 200
    assert os.environ["NTLM_USER_FILE"] == "previous-value"


def test_counters_log_and_reset(iis: IISLikeServer) -> None:
    with httpx.Client() as one, httpx.Client() as two:
        assert handshake(one, iis.url + "/a").status_code == 200
        assert handshake(two, iis.url + "/b", "EXAMPLE\\bob", "S3cret!").status_code == 200
        assert handshake(two, iis.url + "/c", "EXAMPLE\\bob", "bad").status_code == 401
        assert one.get(iis.url + "/d").status_code == 200
        assert iis.connections_opened == 2
        assert iis.max_open_connections == 2
        assert iis.requests_total == 7
        assert iis.handshakes_completed == 2
        assert iis.connection_users() == {1: "EXAMPLE\\alice", 2: None}
        log = iis.log
        assert [(r.conn_seq, r.path, r.status, r.user) for r in log] == [
            (1, "/a", 401, None),
            (1, "/a", 200, "EXAMPLE\\alice"),
            (2, "/b", 401, None),
            (2, "/b", 200, "EXAMPLE\\bob"),
            (2, "/c", 401, None),
            (2, "/c", 401, None),
            (1, "/d", 200, "EXAMPLE\\alice"),
        ]
        assert all(r.started <= r.finished for r in log)
        iis.reset()
        assert (iis.requests_total, iis.handshakes_completed, iis.connections_opened) == (0, 0, 0)
        assert iis.log == []
        assert iis.max_open_connections == 2  # still open
        assert iis.connection_users() == {1: "EXAMPLE\\alice", 2: None}
        assert one.get(iis.url).json()["conn"] == 1


def test_tokens_are_never_recorded_or_logged_by_the_server(
    iis: IISLikeServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spnego")
    context = initiator(*ALICE, protocol="negotiate")
    token1 = base64.b64encode(context.step() or b"").decode()
    leg1 = client.get(iis.url, headers={"Authorization": f"Negotiate {token1}"})
    token2 = server_token(leg1, "Negotiate")
    token3 = base64.b64encode(context.step(token2) or b"").decode()
    assert client.get(iis.url, headers={"Authorization": f"Negotiate {token3}"}).status_code == 200
    recorded = repr(iis.log)
    assert token1 not in recorded
    assert token3 not in recorded
    spnego_records = [r for r in caplog.records if r.name.startswith("spnego")]
    assert any("step input" in r.getMessage() for r in spnego_records)  # the client's own
    # Only the test thread's initiator logged; the server's acceptor records were dropped.
    assert {r.thread for r in spnego_records} == {threading.get_ident()}


# -- concurrency and async clients ------------------------------------------------------------


def test_two_thousand_authenticated_requests_at_concurrency_50(iis: IISLikeServer) -> None:
    per_connection = 40
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            with httpx.Client() as client:
                first = handshake(client, iis.url + "/load")
                assert first.status_code == 200
                conn = first.json()["conn"]
                for _ in range(per_connection - 1):
                    response = client.get(iis.url + "/load")
                    assert response.status_code == 200
                    assert response.json()["conn"] == conn
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert iis.connections_opened == 50
    assert iis.handshakes_completed == 50
    assert iis.requests_total == 50 * (per_connection + 1)
    assert sum(r.status == 200 for r in iis.log) == 2000


@pytest.mark.anyio
async def test_async_clients_on_both_backends(iis: IISLikeServer) -> None:
    async with httpx.AsyncClient() as client:
        context = initiator(*ALICE, protocol="negotiate")
        leg1 = await client.get(iis.url, headers=auth_header("Negotiate", context.step()))
        type3 = context.step(server_token(leg1, "Negotiate"))
        leg2 = await client.get(iis.url, headers=auth_header("Negotiate", type3))
        assert leg2.status_code == 200
        context.step(server_token(leg2, "Negotiate"))
        assert context.complete
        later = await client.get(iis.url)
        assert later.json()["conn"] == int(leg1.headers["x-conn-seq"])
        assert later.json()["handshake"] is False


def test_affinity_cookie_set_on_401_and_required_on_the_next_leg(
    user_file: Path, client: httpx.Client
) -> None:
    with IISLikeServer(user_file=user_file, affinity_cookie="ARRAffinity") as srv:
        # The client's jar sends back what each 401 set: the handshake completes.
        assert handshake(client, srv.url).status_code == 200

        # A leg without the cookie is refused, as a farm's balancer would send it elsewhere.
        client.cookies.clear()
        context = initiator(*ALICE)
        first = client.get(srv.url, headers=auth_header("NTLM", context.step()))
        assert first.status_code == 401
        assert first.headers["set-cookie"].startswith("ARRAffinity=conn-")
        client.cookies.clear()
        type3 = context.step(server_token(first, "NTLM"))
        final = client.get(srv.url, headers=auth_header("NTLM", type3))
        assert final.status_code == 401
        assert srv.log[-1].error == "handshake leg without the ARRAffinity cookie"
