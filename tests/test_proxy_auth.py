"""Authentication to proxies (issue 9, client side): ExClient against the loopback AuthProxy.

The proxy (``httpx_extensions.testing.AuthProxy``) keeps a real pyspnego acceptor per client
connection, as Squid binds NTLM to the connection; its log says which connection every leg
came on and with which scheme, so the tests read the client's behaviour from the proxy's
side. Origins are the suite's LoopbackServer (``/echo`` shows what reached the origin) and
IISLikeServer (NTLM to the origin inside the tunnel).
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import trustme

from httpx_extensions import (
    ExClient,
    ExTransport,
    NegotiateAuth,
    NTLMAuth,
    Proxy,
    ProxyAuthenticationError,
)
from httpx_extensions.testing import AuthProxy, IISLikeServer, write_user_file

from .conftest import assert_pool_clean
from .servers import LoopbackServer

pytestmark = pytest.mark.anyio

USERS = [
    ("EXAMPLE", "alice", "Passw0rd"),
    ("EXAMPLE", "bob", "S3cret!"),
]
ALICE = ("EXAMPLE\\alice", "Passw0rd")
BOB = ("EXAMPLE\\bob", "S3cret!")
SECRETS = ("Passw0rd", "S3cret!", "wrong-pw")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("proxy-auth") / "users.txt", USERS)


def serve(proxy: AuthProxy) -> Iterator[AuthProxy]:
    with proxy as running:
        yield running
    assert running.errors == []
    assert running.proxy_credentials_forwarded == 0


@pytest.fixture
def ntlm_proxy(user_file: Path) -> Iterator[AuthProxy]:
    yield from serve(AuthProxy(user_file=user_file, schemes=("NTLM",)))


@pytest.fixture
def origin() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def tls_origin(ca: trustme.CA) -> Iterator[LoopbackServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with LoopbackServer(ssl_context=context) as srv:
        yield srv


def legs(proxy: AuthProxy) -> list[tuple[int, str, int, str | None]]:
    """(connection, method, status, scheme) of every request the proxy saw."""
    return [(r.conn_seq, r.method, r.status, r.scheme) for r in proxy.log]


def echoed(response: httpx.Response) -> dict[str, str]:
    return {name.lower(): value for name, value in response.json()["headers"]}


def no_secret_in(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        assert base64.b64encode(secret.encode()).decode() not in text
    assert "TlRMTVNT" not in text  # base64 of "NTLMSSP": no NTLM token


# -- the API -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["user:pw", ("user",), ("user", 1), object(), httpx.Auth()])
async def test_proxy_auth_bad_values_are_type_errors_naming_what_is_accepted(bad: Any) -> None:
    for build in (
        lambda: ExClient(proxy="http://127.0.0.1:1", proxy_auth=bad),
        lambda: ExTransport(proxy="http://127.0.0.1:1", proxy_auth=bad),
        lambda: Proxy("http://127.0.0.1:1", auth=bad),
    ):
        with pytest.raises(TypeError, match=r"NTLMAuth.*NegotiateAuth.*BasicAuth.*DigestAuth"):
            build()


async def test_proxy_auth_needs_an_http_proxy() -> None:
    with pytest.raises(ValueError, match="pass proxy="):
        ExTransport(proxy_auth=NTLMAuth(*ALICE))
    with pytest.raises(TypeError, match="SOCKS5"):
        ExTransport(proxy="socks5://127.0.0.1:1", proxy_auth=NTLMAuth(*ALICE))
    with pytest.raises(TypeError, match="SOCKS5"):
        Proxy("socks5://127.0.0.1:1", auth=NTLMAuth(*ALICE))


async def test_proxy_repr_and_raw_auth_never_show_a_password() -> None:
    from_url = Proxy("http://EXAMPLE%5Calice:Passw0rd@127.0.0.1:3128")
    assert from_url.auth == ALICE
    assert from_url.raw_auth == (b"EXAMPLE\\alice", b"Passw0rd")  # httpx's, for a tuple
    with_object = Proxy("http://127.0.0.1:3128", auth=NTLMAuth(*ALICE))
    assert with_object.raw_auth is None  # an auth object has no Basic form
    assert isinstance(with_object.auth, NTLMAuth)
    basic = Proxy("http://127.0.0.1:3128", auth=httpx.BasicAuth(*ALICE))
    # An auth object given explicitly wins over credentials in the URL.
    both = Proxy("http://EXAMPLE%5Cbob:S3cret!@127.0.0.1:3128", auth=NTLMAuth(*ALICE))
    assert isinstance(both.auth, NTLMAuth)
    assert "S3cret" not in repr(both)
    assert str(both.url) == "http://127.0.0.1:3128"
    shown = [repr(p) for p in (from_url, with_object, basic)]
    assert "EXAMPLE\\\\alice" in shown[0]
    assert "EXAMPLE\\\\alice" in shown[1]
    for text in shown:
        no_secret_in(text)
    transport = ExTransport(proxy=with_object)
    no_secret_in(repr(transport))


# -- CONNECT and forward with NTLM ----------------------------------------------------------


async def test_proxy_ntlm_forward_stays_authenticated_and_connect_starts_at_once(
    ntlm_proxy: AuthProxy,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    async with ExClient(
        proxy=ntlm_proxy.url, proxy_auth=NTLMAuth(*ALICE), verify=client_ssl_context
    ) as client:
        forward = [await client.get(origin.url + "/echo") for _ in range(3)]
        tunnelled = [await client.get(tls_origin.url + "/echo") for _ in range(3)]
        assert [r.status_code for r in forward + tunnelled] == [200] * 6
        assert len({r.extensions["conn_id"] for r in forward}) == 1
        assert len({r.extensions["conn_id"] for r in tunnelled}) == 1
        for response in forward + tunnelled:
            assert not any(name.startswith("proxy-") for name in echoed(response))
        assert_pool_clean(client)
    assert legs(ntlm_proxy) == [
        # Forward: anonymous, 407 offering NTLM; type 1 -> 407 challenge; type 3 -> 200.
        (1, "GET", 407, None),
        (1, "GET", 407, "NTLM"),
        (1, "GET", 200, "NTLM"),
        # The connection is authenticated: no header any more.
        (1, "GET", 200, None),
        (1, "GET", 200, None),
        # CONNECT: the scheme is known, so the handshake starts with the first CONNECT.
        (2, "CONNECT", 407, "NTLM"),
        (2, "CONNECT", 200, "NTLM"),
    ]
    assert ntlm_proxy.handshakes_completed == 2
    assert next(r.user for r in ntlm_proxy.log if r.status == 200) == "EXAMPLE\\alice"


@pytest.mark.parametrize("chunked", [False, True])
async def test_proxy_connect_handshake_from_a_fresh_client_drains_407_bodies(
    user_file: Path, tls_origin: LoopbackServer, client_ssl_context: ssl.SSLContext, chunked: bool
) -> None:
    with AuthProxy(
        user_file=user_file, schemes=("Negotiate", "NTLM"), chunked_407=chunked
    ) as proxy:
        proxy_url = Proxy(proxy.url, auth=NTLMAuth(*ALICE))
        async with ExClient(proxy=proxy_url, verify=client_ssl_context) as client:
            response = await client.get(tls_origin.url + "/")
            assert response.text == "Hello, world!"
            assert_pool_clean(client)
        # The three CONNECT legs on one connection: each 407's body was read off it.
        assert legs(proxy) == [
            (1, "CONNECT", 407, None),
            (1, "CONNECT", 407, "NTLM"),
            (1, "CONNECT", 200, "NTLM"),
        ]
        assert proxy.connections_opened == 1
        assert proxy.errors == []


async def test_proxy_forward_body_is_replayed_and_the_negotiate_leg_uploads_nothing(
    ntlm_proxy: AuthProxy, origin: LoopbackServer
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"hello, "
        yield b"proxy"

    async with ExClient(proxy=ntlm_proxy.url, proxy_auth=NTLMAuth(*ALICE)) as client:
        response = await client.post(origin.url + "/echo", content=body())
        assert response.status_code == 200
        assert response.json()["body"] == "hello, proxy"
        # On the authenticated connection, a streamed body goes out once, as it is.
        response = await client.post(origin.url + "/echo", content=body())
        assert response.json()["body"] == "hello, proxy"
        assert_pool_clean(client)
    assert [(r.status, r.ntlm_message) for r in ntlm_proxy.log] == [
        (407, None),
        (407, 1),
        (200, 3),
        (200, None),
    ]


async def test_proxy_ntlm_and_origin_ntlm_with_channel_binding_in_one_tunnel(
    ntlm_proxy: AuthProxy, user_file: Path, ca: trustme.CA, client_ssl_context: ssl.SSLContext
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with IISLikeServer(
        user_file=user_file, ssl_context=context, require_channel_binding=True
    ) as iis:
        async with ExClient(
            proxy=ntlm_proxy.url,
            proxy_auth=NTLMAuth(*ALICE),
            auth=NTLMAuth(*BOB),
            verify=client_ssl_context,
        ) as client:
            responses = [await client.get(iis.url + "/") for _ in range(3)]
            assert [r.status_code for r in responses] == [200] * 3
            assert_pool_clean(client)
        assert iis.handshakes_completed == 1
        assert [r.user for r in iis.log if r.status == 200] == ["EXAMPLE\\bob"] * 3
        assert [r.channel_binding for r in iis.log if r.ntlm_message == 3] == ["match"]
        for record in iis.log:  # the origin never saw the proxy's credentials
            assert record.user in (None, "EXAMPLE\\bob")
    assert ntlm_proxy.handshakes_completed == 1
    assert {r.user for r in ntlm_proxy.log if r.status == 200} == {"EXAMPLE\\alice"}


async def test_proxy_ntlm_and_origin_ntlm_through_a_forward_proxy(
    ntlm_proxy: AuthProxy, user_file: Path
) -> None:
    with IISLikeServer(user_file=user_file) as iis:
        async with ExClient(
            proxy=ntlm_proxy.url, proxy_auth=NTLMAuth(*ALICE), auth=NTLMAuth(*BOB)
        ) as client:
            responses = [await client.get(iis.url + "/") for _ in range(3)]
            assert [r.status_code for r in responses] == [200] * 3
            assert_pool_clean(client)
        assert iis.handshakes_completed == 1
        assert {r.user for r in iis.log if r.status == 200} == {"EXAMPLE\\bob"}
    # The origin's 401s came through the proxy: the proxy connection stayed authenticated.
    assert ntlm_proxy.handshakes_completed == 1
    assert [(r.status, r.scheme) for r in ntlm_proxy.log] == [
        (407, None),
        (407, "NTLM"),
        (401, "NTLM"),  # proxy handshake done; the origin's anonymous 401
        (401, None),  # the origin's NTLM legs, no proxy header
        (200, None),
        (200, None),
        (200, None),
    ]


async def test_proxy_https_proxy_binds_ntlm_to_the_proxy_certificate(
    user_file: Path,
    ca: trustme.CA,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with AuthProxy(
        user_file=user_file, schemes=("NTLM",), ssl_context=context, require_channel_binding=True
    ) as proxy:
        async with ExClient(
            proxy=proxy.url, proxy_auth=NTLMAuth(*ALICE), verify=client_ssl_context
        ) as client:
            assert (await client.get(origin.url + "/")).status_code == 200
            assert (await client.get(tls_origin.url + "/")).status_code == 200
        assert [r.channel_binding for r in proxy.log if r.ntlm_message == 3] == ["match"] * 2


# -- other schemes ----------------------------------------------------------------------------


async def test_proxy_basic_goes_with_every_request_and_digest_answers_challenges(
    user_file: Path,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    with AuthProxy(user_file=user_file, schemes=("Basic",)) as proxy:
        async with ExClient(
            proxy=proxy.url, proxy_auth=httpx.BasicAuth(*ALICE), verify=client_ssl_context
        ) as client:
            for url in (origin.url, origin.url, tls_origin.url):
                assert (await client.get(url + "/echo")).status_code == 200
        # httpx's behaviour: Basic with the first request, and with every one.
        assert legs(proxy) == [
            (1, "GET", 200, "Basic"),
            (1, "GET", 200, "Basic"),
            (2, "CONNECT", 200, "Basic"),
        ]
    with AuthProxy(user_file=user_file, schemes=("Digest",)) as proxy:
        async with ExClient(
            proxy=proxy.url, proxy_auth=httpx.DigestAuth(*ALICE), verify=client_ssl_context
        ) as client:
            for url in (origin.url, origin.url, tls_origin.url):
                assert (await client.get(url + "/")).status_code == 200
            assert_pool_clean(client)
            statuses = [(r.method, r.status, r.scheme) for r in proxy.log]
            assert statuses[:2] == [("GET", 407, None), ("GET", 200, "Digest")]
            assert ("CONNECT", 200, "Digest") in statuses
            assert {r.user for r in proxy.log if r.status == 200} == {"EXAMPLE\\alice"}
            # The proxy forgets its nonces (a restart): the next preemptive answer is refused,
            # and the new challenge is answered once, on the same connection.
            proxy._digest_nonces.clear()
            proxy.reset()
            assert (await client.get(origin.url + "/")).status_code == 200
            assert legs(proxy) == [(1, "GET", 407, "Digest"), (1, "GET", 200, "Digest")]


async def test_proxy_digest_realm_with_a_comma_is_one_parameter(
    user_file: Path, origin: LoopbackServer
) -> None:
    # RFC 9110 5.6.4: a comma inside a quoted string splits nothing. Split there, Digest hashed
    # a realm cut short ("Example) and every request through the proxy was refused.
    with AuthProxy(user_file=user_file, schemes=("Digest",), realm="Example, Inc.") as proxy:
        async with ExClient(proxy=proxy.url, proxy_auth=httpx.DigestAuth(*ALICE)) as client:
            assert (await client.get(origin.url + "/")).status_code == 200
        assert [r.status for r in proxy.log] == [407, 200]
        assert {r.user for r in proxy.log if r.status == 200} == {"EXAMPLE\\alice"}


# -- URL credentials and the environment -----------------------------------------------------


async def test_proxy_url_credentials_upgrade_to_ntlm_and_never_go_out_as_basic(
    user_file: Path,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with AuthProxy(user_file=user_file, schemes=("Negotiate", "NTLM")) as proxy:
        url = proxy.url.replace("http://", "http://EXAMPLE%5Calice:Passw0rd@")
        with caplog.at_level(logging.INFO, logger="httpx_extensions.auth"):
            async with ExClient(proxy=url, verify=client_ssl_context) as client:

                async def get(target: str) -> None:
                    assert (await client.get(target + "/")).status_code == 200

                # First requests at once: each meets a 407, one INFO line all the same.
                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(get, origin.url)
                for target in (origin.url, tls_origin.url, origin.url):
                    await get(target)
        assert {r.scheme for r in proxy.log} == {None, "NTLM"}  # never Basic
        assert {r.user for r in proxy.log if r.status == 200} == {"EXAMPLE\\alice"}
        chosen = [r.getMessage() for r in caplog.records if "answering with" in r.getMessage()]
        assert len(chosen) == 1  # once per proxy
        assert "NTLM" in chosen[0]
        assert proxy.url.rstrip("/") in chosen[0]
        no_secret_in(caplog.text)


async def test_proxy_url_credentials_use_basic_only_where_offered(
    user_file: Path, origin: LoopbackServer
) -> None:
    with AuthProxy(user_file=user_file, schemes=("Basic",)) as proxy:
        url = proxy.url.replace("http://", "http://EXAMPLE%5Calice:Passw0rd@")
        async with ExClient(proxy=url) as client:
            assert (await client.get(origin.url + "/")).status_code == 200
            assert (await client.get(origin.url + "/")).status_code == 200
        # The first request goes without credentials (as curl --proxy-anyauth); once the
        # proxy has shown it takes Basic, every request carries it.
        assert legs(proxy) == [
            (1, "GET", 407, None),
            (1, "GET", 200, "Basic"),
            (1, "GET", 200, "Basic"),
        ]


async def test_proxy_environment_proxies_take_proxy_auth(
    ntlm_proxy: AuthProxy,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", ntlm_proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", ntlm_proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost")
    async with ExClient(proxy_auth=NTLMAuth(*ALICE), verify=client_ssl_context) as client:
        assert (await client.get(origin.url + "/")).status_code == 200
        assert (await client.get(tls_origin.url + "/")).status_code == 200
        direct = await client.get(f"http://localhost:{origin.port}/")  # NO_PROXY
        assert direct.status_code == 200
        assert_pool_clean(client)
    assert [(r.method, r.status) for r in ntlm_proxy.log if r.status != 407] == [
        ("GET", 200),
        ("CONNECT", 200),
    ]
    # http:// and https:// have a transport each (HTTP_PROXY, HTTPS_PROXY): three legs each,
    # and nothing for localhost.
    assert len(ntlm_proxy.log) == 6


async def test_proxy_environment_url_credentials_upgrade_to_ntlm(
    ntlm_proxy: AuthProxy,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        "HTTPS_PROXY", ntlm_proxy.url.replace("http://", "http://EXAMPLE%5Cbob:S3cret!@")
    )
    async with ExClient(verify=client_ssl_context) as client:
        assert (await client.get(tls_origin.url + "/")).status_code == 200
    assert [r.user for r in ntlm_proxy.log if r.status == 200] == ["EXAMPLE\\bob"]


async def test_proxy_auth_precedence_proxy_object_then_proxy_auth_then_url_credentials(
    ntlm_proxy: AuthProxy, origin: LoopbackServer
) -> None:
    bob_in_url = ntlm_proxy.url.replace("http://", "http://EXAMPLE%5Cbob:S3cret!@")
    cases = [
        # proxy_auth= overrides credentials in the URL (as curl's --proxy-user does)...
        (bob_in_url, NTLMAuth(*ALICE), "EXAMPLE\\alice"),
        # ...and an auth object on the Proxy itself overrides proxy_auth=.
        (Proxy(ntlm_proxy.url, auth=NTLMAuth(*BOB)), NTLMAuth(*ALICE), "EXAMPLE\\bob"),
        (bob_in_url, None, "EXAMPLE\\bob"),
    ]
    for proxy, proxy_auth, user in cases:
        ntlm_proxy.reset()
        async with ExClient(proxy=proxy, proxy_auth=proxy_auth) as client:
            assert (await client.get(origin.url + "/")).status_code == 200
        assert [r.user for r in ntlm_proxy.log if r.status == 200] == [user]


# -- isolation --------------------------------------------------------------------------------


async def test_proxy_two_identities_on_one_client_never_share_a_connection(
    ntlm_proxy: AuthProxy, origin: LoopbackServer, user_file: Path
) -> None:
    with LoopbackServer() as other:
        mounts = {
            f"http://127.0.0.1:{origin.port}": ExTransport(
                proxy=Proxy(ntlm_proxy.url, auth=NTLMAuth(*ALICE))
            ),
            f"http://127.0.0.1:{other.port}": ExTransport(
                proxy=Proxy(ntlm_proxy.url, auth=NTLMAuth(*BOB))
            ),
        }
        async with ExClient(mounts=mounts) as client:

            async def get(url: str) -> None:
                assert (await client.get(url)).status_code == 200

            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(get, origin.url + "/")
                    tg.start_soon(get, other.url + "/")
            assert_pool_clean(client)
            for info in client.connections:
                assert "Passw0rd" not in repr(info)
                assert "S3cret" not in repr(info)
    users: dict[int, set[str | None]] = {}
    for record in ntlm_proxy.log:
        users.setdefault(record.conn_seq, set()).add(record.user)
    for seen in users.values():
        passed = seen - {None}
        assert len(passed) == 1, seen  # one identity per proxy connection
    assert {u for seen in users.values() for u in seen} - {None} == {
        "EXAMPLE\\alice",
        "EXAMPLE\\bob",
    }
    passed_on = {r.target.split("/")[2]: r.user for r in ntlm_proxy.log if r.status == 200}
    assert passed_on == {
        f"127.0.0.1:{origin.port}": "EXAMPLE\\alice",
        f"127.0.0.1:{other.port}": "EXAMPLE\\bob",
    }


async def test_proxy_identity_is_part_of_the_pool_key(
    ntlm_proxy: AuthProxy, origin: LoopbackServer
) -> None:
    async with ExClient(proxy=ntlm_proxy.url, proxy_auth=NTLMAuth(*ALICE)) as client:
        await client.get(origin.url + "/")
        (info,) = client.connections
        origin_part, proxy_part = info.partition
        assert origin_part is None
        assert proxy_part.proxy == ntlm_proxy.url.rstrip("/")
        assert "alice" not in repr(proxy_part)  # the identity is not shown at all
        no_secret_in(repr(info))


# -- closing proxies, wrong credentials, errors --------------------------------------------------


@pytest.mark.parametrize("scheme", ["NTLM", "Basic"])
async def test_proxy_that_closes_after_each_407_gets_the_handshake_on_a_new_connection(
    user_file: Path,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
    scheme: str,
) -> None:
    with AuthProxy(user_file=user_file, schemes=(scheme,), close_after_challenge=True) as proxy:
        auth = NTLMAuth(*ALICE) if scheme == "NTLM" else ALICE
        async with ExClient(proxy=proxy.url, proxy_auth=auth, verify=client_ssl_context) as client:
            for target in (origin.url, tls_origin.url, origin.url):
                assert (await client.get(target + "/")).status_code == 200
            assert_pool_clean(client)
        log = legs(proxy)
        # After the 407 that closed connection 1, connection 2 starts with credentials.
        assert log[0] == (1, "GET", 407, None)
        assert log[1][0] == 2
        assert log[1][3] == scheme
        assert all(r.scheme == scheme for r in proxy.log[1:] if r.method == "CONNECT")
        assert proxy.errors == []


async def test_proxy_that_closes_mid_handshake_is_an_error_saying_so(
    user_file: Path,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    with AuthProxy(
        user_file=user_file, schemes=("NTLM",), close_after_challenge=True, close_mid_handshake=True
    ) as proxy:
        async with ExClient(
            proxy=proxy.url, proxy_auth=NTLMAuth(*ALICE), verify=client_ssl_context
        ) as client:
            for target in (origin.url, tls_origin.url):
                with pytest.raises(ProxyAuthenticationError, match="closed the connection") as info:
                    await client.get(target + "/")
                assert info.value.reason == "closed"
                assert isinstance(info.value, httpx.ProxyError)
            assert_pool_clean(client)


async def test_proxy_wrong_password_is_a_proxy_error_without_secrets(
    ntlm_proxy: AuthProxy,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with ExClient(
        proxy=ntlm_proxy.url,
        proxy_auth=NTLMAuth("EXAMPLE\\alice", "wrong-pw"),
        verify=client_ssl_context,
    ) as client:
        for target in (origin.url, tls_origin.url):
            with pytest.raises(ProxyAuthenticationError) as info:
                await client.get(target + "/")
            error = info.value
            assert error.reason == "rejected"
            assert error.offered == ("NTLM",)
            assert error.proxy == ntlm_proxy.url.rstrip("/")
            message = str(error)
            assert ntlm_proxy.url.rstrip("/") in message
            assert "NTLM" in message
            assert "rejected" in message
            no_secret_in(message + repr(error))
            assert error.request.url == httpx.URL(target + "/")
        assert_pool_clean(client)
    no_secret_in(caplog.text)
    # Each request: at most one handshake attempt, never a loop.
    assert ntlm_proxy.handshakes_started == 2


async def test_proxy_407_without_proxy_auth_says_how_to_configure_it(
    ntlm_proxy: AuthProxy,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    async with ExClient(proxy=ntlm_proxy.url, verify=client_ssl_context) as client:
        for target in (origin.url, tls_origin.url):
            with pytest.raises(httpx.ProxyError, match=r"407.*NTLM.*proxy_auth=") as info:
                await client.get(target + "/")
            assert isinstance(info.value, ProxyAuthenticationError)
            assert info.value.reason == "no_credentials"
        assert_pool_clean(client)
    assert len(ntlm_proxy.log) == 2  # one anonymous request each, nothing else tried


async def test_proxy_credentials_for_a_scheme_not_offered_are_not_sent_twice(
    ntlm_proxy: AuthProxy, origin: LoopbackServer
) -> None:
    async with ExClient(proxy=ntlm_proxy.url, proxy_auth=httpx.DigestAuth(*ALICE)) as client:
        with pytest.raises(ProxyAuthenticationError, match="answer none of") as info:
            await client.get(origin.url + "/")
        assert info.value.reason == "unsupported_scheme"
        assert "DigestAuth" in str(info.value)
    assert legs(ntlm_proxy) == [(1, "GET", 407, None)]


async def test_proxy_that_rechallenges_every_request_gets_streamed_bodies_again(
    user_file: Path, origin: LoopbackServer
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"streamed "
        yield b"body"

    with AuthProxy(user_file=user_file, schemes=("NTLM",), rechallenge_every_request=True) as proxy:
        async with ExClient(proxy=proxy.url, proxy_auth=NTLMAuth(*ALICE)) as client:
            for _ in range(2):
                response = await client.post(origin.url + "/echo", content=body())
                assert response.json()["body"] == "streamed body"
            assert_pool_clean(client)
        assert proxy.handshakes_completed == 2
        # Once the proxy was seen re-challenging, the handshake starts with each request.
        assert [(r.status, r.ntlm_message) for r in proxy.log] == [
            (407, None),
            (407, 1),
            (200, 3),
            (407, None),
            (407, 1),
            (200, 3),
        ]
        proxy.reset()
        async with ExClient(proxy=proxy.url, proxy_auth=NTLMAuth(*ALICE)) as client:
            for _ in range(3):
                assert (await client.get(origin.url + "/")).status_code == 200
        assert [r.status for r in proxy.log] == [407, 407, 200, 407, 407, 200, 407, 200]


async def test_proxy_that_rechallenges_every_request(
    user_file: Path, origin: LoopbackServer
) -> None:
    with AuthProxy(user_file=user_file, schemes=("NTLM",), rechallenge_every_request=True) as proxy:
        async with ExClient(proxy=proxy.url, proxy_auth=NTLMAuth(*ALICE)) as client:
            for _ in range(3):
                assert (await client.get(origin.url + "/")).status_code == 200
        assert proxy.handshakes_completed == 3
        assert proxy.connections_opened == 1


# -- cancellation -----------------------------------------------------------------------------


async def test_proxy_cancellation_during_a_connect_handshake_leaves_nothing_reserved(
    ntlm_proxy: AuthProxy, tls_origin: LoopbackServer, client_ssl_context: ssl.SSLContext
) -> None:
    async with ExClient(
        proxy=ntlm_proxy.url, proxy_auth=NTLMAuth(*ALICE), verify=client_ssl_context
    ) as client:
        waits: list[str] = []
        with anyio.CancelScope() as scope:

            async def trace(name: str, info: dict[str, Any]) -> None:
                # The second CONNECT leg (the one with the NTLM negotiate message) is out:
                # cancel while its 407 is awaited.
                if name.endswith("receive_response_headers.started"):
                    waits.append(name)
                if len(waits) == 2:
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()

            await client.get(tls_origin.url + "/", extensions={"trace": trace})
        assert scope.cancelled_caught
        assert len(waits) == 2
        assert ntlm_proxy.tunnels_opened == 0  # cancelled before the handshake finished
        assert client.connections == []  # the half-done tunnel was closed, not pooled
        assert_pool_clean(client)
        # The client still works afterwards, on a fresh connection and handshake.
        assert (await client.get(tls_origin.url + "/")).status_code == 200
        assert_pool_clean(client)


# -- load ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["http", "https"])
async def test_proxy_2000_requests_at_concurrency_50_through_10_connections(
    ntlm_proxy: AuthProxy,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
    target: str,
) -> None:
    url = (origin if target == "http" else tls_origin).url + "/"
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10)
    statuses: list[int] = []
    async with ExClient(
        proxy=ntlm_proxy.url, proxy_auth=NTLMAuth(*ALICE), verify=client_ssl_context, limits=limits
    ) as client:
        limiter = anyio.CapacityLimiter(50)

        async def get() -> None:
            async with limiter:
                statuses.append((await client.get(url)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(2000):
                tg.start_soon(get)
        assert_pool_clean(client)
    assert statuses == [200] * 2000
    assert ntlm_proxy.connections_opened <= 10
    # Exchanges with the proxy: every request it saw (407 legs included); a request inside
    # a tunnel passes through it as bytes, so it counts as one too.
    exchanges = len(ntlm_proxy.log) + (2000 if target == "https" else 0)
    assert exchanges / 2000 <= 1.05
    if target == "http":
        assert ntlm_proxy.requests_forwarded == 2000
    else:
        assert ntlm_proxy.tunnels_opened == ntlm_proxy.connections_opened
    assert ntlm_proxy.handshakes_completed == ntlm_proxy.connections_opened


# -- on the wire ------------------------------------------------------------------------------


class _RecordingProxy:
    """A socket that records one request head and answers it (403 unless told), then closes."""

    def __init__(self, answer: bytes = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n") -> None:
        self._answer = answer + b"Connection: close\r\n\r\n"
        import socket
        import threading

        self.heads: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.heads.append(data)
            conn.sendall(self._answer)

    def close(self) -> None:
        self._thread.join()
        self._sock.close()


async def test_proxy_connect_asks_for_keep_alive_and_carries_no_origin_credentials() -> None:
    recorder = _RecordingProxy()
    try:
        async with ExClient(
            proxy=recorder.url, proxy_auth=httpx.BasicAuth(*ALICE), auth=httpx.BasicAuth(*BOB)
        ) as client:
            with pytest.raises(httpx.ProxyError, match="403"):
                await client.get("https://127.0.0.1:9/")
            assert_pool_clean(client)
    finally:
        recorder.close()
    (head,) = recorder.heads
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "CONNECT 127.0.0.1:9 HTTP/1.1"
    assert "Proxy-Connection: Keep-Alive" in lines
    expected = base64.b64encode(b"EXAMPLE\\alice:Passw0rd").decode()
    assert f"Proxy-Authorization: Basic {expected}" in lines
    assert not any(line.lower().startswith("authorization:") for line in lines)


async def test_proxy_digest_challenge_that_cannot_be_answered_is_an_error_saying_so() -> None:
    recorder = _RecordingProxy(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n"
        b'Proxy-Authenticate: Digest realm="r", nonce="n", qop="auth-int"\r\n'
    )
    try:
        async with ExClient(proxy=recorder.url, proxy_auth=httpx.DigestAuth(*ALICE)) as client:
            with pytest.raises(ProxyAuthenticationError, match="Digest challenge is unusable"):
                await client.get("http://127.0.0.1:9/")
            assert_pool_clean(client)
    finally:
        recorder.close()
    assert len(recorder.heads) == 1


async def test_proxy_negotiate_falls_back_to_ntlm_inside_spnego(
    user_file: Path,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    with AuthProxy(user_file=user_file, schemes=("Negotiate",)) as proxy:
        async with ExClient(
            proxy=proxy.url, proxy_auth=NegotiateAuth(*ALICE), verify=client_ssl_context
        ) as client:
            for target in (origin.url, origin.url, tls_origin.url):
                assert (await client.get(target + "/")).status_code == 200
            assert_pool_clean(client)
        passed = [r for r in proxy.log if r.handshake]
        assert [(r.method, r.mechanism, r.user) for r in passed] == [
            ("GET", "ntlm", "EXAMPLE\\alice"),
            ("CONNECT", "ntlm", "EXAMPLE\\alice"),
        ]
        assert {r.scheme for r in proxy.log} == {None, "Negotiate"}
        assert proxy.errors == []
