"""AuthProxy and IISLikeServer (``httpx_extensions.testing``) paths the rest of the suite left out.

What a user testing a client against them meets: Digest credentials with a flaw get a 407
naming it, RFC 2069 Digest passes, user-file lines that cannot be read are skipped, a token
that is not base64 is refused, an unreachable target is a 502, an origin that answers badly
(an informational response first, no response, garbage, a short body) is mirrored, and the
servers' argument checks and start-up failures say what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import h11
import httpx
import pytest

from httpx_extensions.testing import AuthProxy, IISLikeServer, write_user_file

from .servers import LoopbackServer
from .test_http11 import CLOSE, ScriptedServer, reply
from .test_ntlm_server import auth_header, initiator
from .test_proxy_server import ALICE, REALM, USERS, Conn, basic, header, ntlm_handshake


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("proxy") / "users.txt", USERS)


@pytest.fixture
def origin() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def ntlm_proxy(user_file: Path) -> Iterator[AuthProxy]:
    with AuthProxy(user_file=user_file, schemes=("NTLM", "Negotiate", "Basic")) as running:
        yield running
    assert running.errors == []


def _digest_fields(offer: h11.Response, target: str, **changes: str | None) -> str:
    """A valid MD5 qop=auth credential for ALICE on ``GET target``, with fields changed or
    (value None) left out; the response is computed from the fields that remain."""
    (value,) = [v for v in header(offer, "proxy-authenticate") if v.startswith("Digest ")]
    fields: dict[str, str | None] = {
        "username": ALICE[0],
        "realm": REALM,
        "nonce": value.split('nonce="')[1].split('"')[0],
        "uri": target,
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "0a4f113b",
        "algorithm": "MD5",
    }
    fields.update(changes)

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    ha1 = md5(f"{fields['username']}:{REALM}:{ALICE[1]}")
    ha2 = md5(f"GET:{target}")
    if fields["qop"] is None:  # RFC 2069: no qop, nc or cnonce
        fields["response"] = md5(f"{ha1}:{fields['nonce']}:{ha2}")
    else:
        fields["response"] = md5(
            f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}"
        )
    quoted = {"username", "realm", "nonce", "uri", "cnonce", "response"}
    parts = [
        f'{k}="{v.replace(chr(92), chr(92) * 2)}"' if k in quoted else f"{k}={v}"
        for k, v in fields.items()
        if v is not None
    ]
    return "Digest " + ", ".join(parts)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param({"uri": None}, "Digest credentials lack ['uri']", id="no-uri"),
        pytest.param({"algorithm": "SHA-999"}, "Digest algorithm 'SHA-999' not offered", id="alg"),
        pytest.param(
            {"username": "EXAMPLE\\mallory"}, "unknown user or no password for Digest", id="user"
        ),
        pytest.param({"nc": None}, "Digest qop=auth needs nc and cnonce", id="no-nc"),
        pytest.param({"cnonce": None}, "Digest qop=auth needs nc and cnonce", id="no-cnonce"),
        pytest.param({"qop": "auth-int"}, "Digest qop 'auth-int' not offered", id="auth-int"),
        pytest.param({"nc": "zz"}, "Digest nonce unknown or replayed", id="nc-not-hex"),
        pytest.param({"nonce": "not-issued"}, "Digest nonce unknown or replayed", id="nonce"),
    ],
)
def test_cov_proxy_digest_flawed_credentials_are_407_with_the_reason(
    user_file: Path, origin: LoopbackServer, changes: dict[str, str | None], error: str
) -> None:
    url = origin.url + "/echo"
    with AuthProxy(user_file=user_file, schemes=("Digest",)) as proxy, Conn(proxy) as conn:
        offer, _ = conn.request("GET", url)
        flawed = [("Proxy-Authorization", _digest_fields(offer, url, **changes))]
        response, body = conn.request("GET", url, flawed)
        assert response.status_code == 407
        assert body
        assert proxy.log[-1].error == error
        # The same connection then passes with good credentials on a fresh offer.
        good = [("Proxy-Authorization", _digest_fields(response, url))]
        assert conn.request("GET", url, good)[0].status_code == 200
    assert origin.requests_total == 1


def test_cov_proxy_digest_without_qop_rfc_2069_passes(
    user_file: Path, origin: LoopbackServer
) -> None:
    url = origin.url + "/echo"
    with AuthProxy(user_file=user_file, schemes=("Digest",)) as proxy, Conn(proxy) as conn:
        offer, _ = conn.request("GET", url)
        old_style = _digest_fields(offer, url, qop=None, nc=None, cnonce=None)
        assert conn.request("GET", url, [("Proxy-Authorization", old_style)])[0].status_code == 200
        # Wrong password in that form is refused.
        wrong = old_style.replace('response="', 'response="0')
        assert conn.request("GET", url, [("Proxy-Authorization", wrong)])[0].status_code == 407
    assert [r.user for r in proxy.log] == [None, "EXAMPLE\\alice", None]


def test_cov_proxy_digest_needs_password_lines(tmp_path: Path, origin: LoopbackServer) -> None:
    hashed = write_user_file(tmp_path / "hashed.txt", USERS, store_hashes=True)
    url = origin.url + "/"
    with AuthProxy(user_file=hashed, schemes=("Digest",)) as proxy, Conn(proxy) as conn:
        offer, _ = conn.request("GET", url)
        good = [("Proxy-Authorization", _digest_fields(offer, url))]
        assert conn.request("GET", url, good)[0].status_code == 407
        assert proxy.log[-1].error == "unknown user or no password for Digest"


def test_cov_proxy_user_file_lines_it_cannot_read_are_skipped(
    tmp_path: Path, origin: LoopbackServer
) -> None:
    # A blank line, a comment, and a hash line whose hash is not hex: only the good lines count.
    good = write_user_file(tmp_path / "good.txt", USERS[:1])
    users = tmp_path / "users.txt"
    users.write_text(
        "\n# a comment\nEXAMPLE\\bob:0:AAD3B435B51404EEAAD3B435B51404EE:not-hex:[U]:LCT-0\n"
        + good.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    with AuthProxy(user_file=users, schemes=("Basic",)) as proxy, Conn(proxy) as conn:
        assert conn.request("GET", origin.url, basic(*ALICE))[0].status_code == 200
        assert (
            conn.request("GET", origin.url, basic("EXAMPLE\\bob", "S3cret!"))[0].status_code == 407
        )
        assert proxy.log[-1].error == "unknown user or wrong password"


@pytest.mark.parametrize("value", ["NTLM !!!", "NTLM", "Negotiate ===="])
def test_cov_proxy_token_that_is_not_base64_or_empty_is_407(
    ntlm_proxy: AuthProxy, origin: LoopbackServer, value: str
) -> None:
    proxy = ntlm_proxy
    with Conn(proxy) as conn:
        response, _ = conn.request("GET", origin.url, [("Proxy-Authorization", value)])
        assert response.status_code == 407
        final, _ = ntlm_handshake(conn, "GET", origin.url)  # the connection still works
        assert final.status_code == 200
    assert proxy.log[0].error in ("token is not base64", "empty token")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cov_proxy_unreachable_target_is_502(ntlm_proxy: AuthProxy) -> None:
    proxy = ntlm_proxy
    port = _closed_port()
    with Conn(proxy) as conn:
        final, _ = ntlm_handshake(conn, "GET", f"http://127.0.0.1:{port}/")
        assert final.status_code == 502
    with Conn(proxy) as conn:
        final, body = ntlm_handshake(conn, "CONNECT", f"127.0.0.1:{port}")
        assert final.status_code == 502
        assert f"cannot connect to 127.0.0.1:{port}".encode() in body
    assert proxy.tunnels_opened == 0


def test_cov_proxy_digest_credential_that_stops_parsing_lacks_fields(
    user_file: Path, origin: LoopbackServer
) -> None:
    url = origin.url + "/"
    with AuthProxy(user_file=user_file, schemes=("Digest",)) as proxy, Conn(proxy) as conn:
        conn.request("GET", url)
        value = f'Digest realm="{REALM}", no equals sign here'
        assert conn.request("GET", url, [("Proxy-Authorization", value)])[0].status_code == 407
    assert proxy.log[-1].error == "Digest credentials lack ['nonce', 'response', 'uri', 'username']"


# -- an origin that answers badly, behind the proxy


def _forward_raw(through: AuthProxy, origin_url: str) -> bytes:
    """A Basic-authenticated GET through the proxy; everything the proxy sends back until
    it closes the connection."""
    with Conn(through) as conn:
        conn.send(
            h11.Request(
                method="GET",
                target=origin_url + "/",
                headers=[("Host", origin_url.split("/")[2]), *basic(*ALICE)],
            ),
            h11.EndOfMessage(),
        )
        received = b""
        while data := conn.sock.recv(65536):
            received += data
        return received


@pytest.fixture
def basic_proxy(user_file: Path) -> Iterator[AuthProxy]:
    with AuthProxy(user_file=user_file, schemes=("Basic",)) as running:
        yield running
    assert running.errors == []


def test_cov_proxy_origins_informational_responses_are_not_relayed(
    basic_proxy: AuthProxy,
) -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    scripted = ScriptedServer([early, reply(b"final")]).start()
    try:
        with Conn(basic_proxy) as conn:
            response, body = conn.request("GET", scripted.url + "/", basic(*ALICE))
        assert response.status_code == 200
        assert body == b"final"
    finally:
        scripted.stop()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param([CLOSE], id="no-answer"),
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", id="garbage"),
    ],
)
def test_cov_proxy_origin_without_a_response_closes_the_clients_connection(
    basic_proxy: AuthProxy, answer: bytes | list[object]
) -> None:
    scripted = ScriptedServer(answer).start()  # type: ignore[arg-type]
    try:
        assert _forward_raw(basic_proxy, scripted.url) == b""  # no response made up
    finally:
        scripted.stop()


def test_cov_proxy_origin_closing_mid_body_cuts_the_clients_copy(
    basic_proxy: AuthProxy,
) -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    scripted = ScriptedServer([short, CLOSE]).start()
    try:
        received = _forward_raw(basic_proxy, scripted.url)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"content-length: 10" in head.lower()
        assert body == b"abc"  # then closed, 7 bytes short, as the origin did
    finally:
        scripted.stop()


# -- IISLikeServer


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as running:
        yield running
    assert running.errors == []


def _type3_shaped(nt_length: int, total: int) -> bytes:
    """An NTLM AUTHENTICATE message's start: signature, type 3, LM fields, NT fields."""
    head = b"NTLMSSP\0" + struct.pack("<I", 3) + b"\0" * 8
    head += struct.pack("<HHI", nt_length, nt_length, 64)
    return head.ljust(total, b"\0")


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"NTLMSSP\0" + struct.pack("<I", 3) + b"\0" * 4, id="cut-before-nt-fields"),
        pytest.param(_type3_shaped(0, 88), id="empty-nt-response"),
    ],
)
def test_cov_iis_malformed_type3_is_a_401_not_a_server_error(
    iis: IISLikeServer, message: bytes
) -> None:
    with httpx.Client() as client:
        context = initiator(*ALICE)
        leg1 = client.get(iis.url, headers=auth_header("NTLM", context.step()))
        assert leg1.status_code == 401
        leg2 = client.get(iis.url, headers=auth_header("NTLM", message))
        assert leg2.status_code == 401
        assert leg2.headers.get_list("www-authenticate") == ["Negotiate", "NTLM"]
    assert iis.log[-1].ntlm_message == 3
    assert iis.log[-1].channel_binding == "none"  # no binding could be read from it
    assert iis.log[-1].error
    assert iis.handshakes_completed == 0


def test_cov_iis_head_gets_the_head_only(iis: IISLikeServer) -> None:
    with httpx.Client() as client:
        head = client.head(iis.url)
        assert head.status_code == 401
        assert int(head.headers["content-length"]) > 0  # what a GET would get
        assert head.content == b""
        # Nothing but the head went out: the connection's next response parses.
        assert client.get(iis.url).status_code == 401
    assert iis.connections_opened == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"final_token": "sometimes"}, "final_token must be one of", id="final"),
        pytest.param({"affinity_cookie": "a=b"}, "is not a plain cookie name", id="cookie"),
    ],
)
def test_cov_iis_bad_arguments_are_value_errors(
    user_file: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        IISLikeServer(user_file=user_file, **kwargs)  # type: ignore[arg-type]


def test_cov_iis_ssl_context_without_a_certificate_is_a_value_error(user_file: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # no chain loaded
    with pytest.raises(ValueError, match="is its certificate chain loaded") as info:
        IISLikeServer(user_file=user_file, ssl_context=context)
    assert isinstance(info.value.__cause__, ssl.SSLError)


def test_cov_iis_failed_start_gives_back_the_user_file_variable(
    user_file: Path, tmp_path: Path
) -> None:
    # ::2 is no address of this machine: the listener cannot be opened (nothing is sent).
    server = IISLikeServer(user_file=user_file, host="::2")
    with pytest.raises(RuntimeError, match="loopback server failed to start") as info:
        server.start()
    assert isinstance(info.value.__cause__, OSError)
    assert "NTLM_USER_FILE" not in os.environ or os.environ["NTLM_USER_FILE"] != str(user_file)
    # Released: a server with another user file may start (the variable is process-wide).
    other = write_user_file(tmp_path / "other.txt", USERS[1:2])
    with IISLikeServer(user_file=other) as running, httpx.Client() as client:
        assert client.get(running.url).status_code == 401


# -- the loopback base (KeepAliveServer)


def test_cov_loopback_status_without_a_standard_reason_has_an_empty_one(
    origin: LoopbackServer,
) -> None:
    with socket.create_connection((origin.host, origin.port), timeout=10) as sock:
        sock.sendall(b"GET /status/599 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while data := sock.recv(65536):
            received += data
    assert received.startswith(b"HTTP/1.1 599 \r\n")


def test_cov_loopback_expect_100_continue_gets_100_before_the_body(
    origin: LoopbackServer,
) -> None:
    with socket.create_connection((origin.host, origin.port), timeout=10) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = b""
        while b"\r\n\r\n" not in interim:  # the server speaks first: the body is held back
            interim += sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"hello")
        rest = interim.partition(b"\r\n\r\n")[2]
        while data := sock.recv(65536):
            rest += data
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert b'"body": "hello"' in rest
