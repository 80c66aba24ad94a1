"""NegotiateAuth with real Kerberos: an MIT KDC on loopback, an IIS-like server that accepts
through pyspnego/GSSAPI with a keytab, and ExClient under asyncio and trio.

The realm (tests/servers/kdc.py) has the user ``alice`` and the service ``HTTP/localhost``
only, so URLs use ``localhost``: with ``127.0.0.1`` the client asks for a ticket for
``HTTP/127.0.0.1``, which does not exist, unless ``NegotiateAuth(hostname="localhost")``.
The server's log tells Kerberos from NTLM (``mechanism``), and Kerberos names users
``alice@HTTPX-EXT.TEST`` where NTLM would say ``DOMAIN\\user``.

Skipped, with the reason, when the MIT tools or the Python bindings are missing: run
scripts/install-kerberos.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import trustme

from httpx_extensions import AuthenticationError, ExClient, NegotiateAuth

from .conftest import assert_pool_clean
from .servers import IISLikeServer, LoopbackServer, write_user_file
from .servers.kdc import LoopbackKDC, kerberos_unavailable

pytestmark = pytest.mark.anyio

REALM = "HTTPX-EXT.TEST"
ALICE = f"alice@{REALM}"
ALICE_PASSWORD = "Al1ce-pw"


@pytest.fixture(scope="module")
def kdc() -> Iterator[LoopbackKDC]:
    """The realm, with alice's TGT in the default ccache (KRB5CCNAME).

    Module scope on purpose: the KDC owns process-wide KRB5_* variables, which are restored
    as soon as this module's tests are done, so no other test module sees the realm or
    alice's ticket.
    """
    reason = kerberos_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with LoopbackKDC(realm=REALM, users={"alice": ALICE_PASSWORD}) as realm:
        realm.kinit("alice")
        yield realm


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # alice's UPN and password also work through NTLM, for the tests of Negotiate's fallback.
    return write_user_file(
        tmp_path_factory.mktemp("kerberos") / "users.txt", [("", ALICE, ALICE_PASSWORD)]
    )


@pytest.fixture
def iis(kdc: LoopbackKDC, user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


@pytest.fixture
def iis_https(kdc: LoopbackKDC, user_file: Path, ca: trustme.CA) -> Iterator[IISLikeServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    with IISLikeServer(
        user_file=user_file, ssl_context=context, require_channel_binding=True
    ) as server:
        yield server


@pytest.fixture
def no_ccache(kdc: LoopbackKDC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty default ticket cache (the file does not exist) for this test."""
    path = tmp_path / "empty.ccache"
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{path}")
    return path


def localhost_url(server: IISLikeServer, path: str = "/") -> str:
    return f"{server.scheme}://localhost:{server.port}{path}"


def assert_kerberos(server: IISLikeServer, *, handshakes: int = 1) -> None:
    ok = [r for r in server.log if r.status == 200]
    assert ok
    assert {r.mechanism for r in ok} == {"kerberos"}
    assert {r.user for r in ok} == {ALICE}
    assert all(r.ntlm_message is None for r in server.log)  # no NTLM message was ever sent
    assert server.handshakes_completed == handshakes
    assert server.errors == []


async def test_kerberos_single_sign_on_from_the_ccache(iis: IISLikeServer) -> None:
    async with ExClient() as client:
        response = await client.get(localhost_url(iis, "/sso"), auth=NegotiateAuth())
        assert response.status_code == 200
        body = response.json()
        assert (body["user"], body["scheme"], body["handshake"]) == (ALICE, "Negotiate", True)
        # Kerberos needs one leg: the anonymous 401, then the AP-REQ answered by the 200.
        assert [(r.scheme, r.status) for r in iis.log] == [(None, 401), ("Negotiate", 200)]
        assert_kerberos(iis)

        # The connection stays authenticated, as with IIS: no new handshake.
        again = await client.get(localhost_url(iis, "/again"), auth=NegotiateAuth())
        assert again.status_code == 200
        assert again.json()["handshake"] is False
        assert iis.requests_total == 3
        assert_kerberos(iis)
        assert_pool_clean(client)


async def test_kerberos_only_without_ntlm(iis: IISLikeServer) -> None:
    async with ExClient() as client:
        response = await client.get(localhost_url(iis), auth=NegotiateAuth(allow_ntlm=False))
        assert response.status_code == 200
        assert response.json()["user"] == ALICE
        assert iis.requests_total == 2
        assert_kerberos(iis)


@pytest.mark.parametrize("allow_ntlm", [True, False])
async def test_kerberos_explicit_credentials_without_a_ccache(
    iis: IISLikeServer, no_ccache: Path, allow_ntlm: bool
) -> None:
    auth = NegotiateAuth(ALICE, ALICE_PASSWORD, allow_ntlm=allow_ntlm)
    async with ExClient() as client:
        response = await client.get(localhost_url(iis), auth=auth)
        assert response.status_code == 200
        assert response.json()["user"] == ALICE
        assert_kerberos(iis)
    assert not await anyio.Path(no_ccache).exists()  # pyspnego keeps the TGT in MEMORY


async def test_kerberos_wrong_password_is_an_authentication_error(
    iis: IISLikeServer, no_ccache: Path
) -> None:
    # The KDC refuses the password before any token reaches the server: there is no 401 to
    # return, unlike NTLM, where the server is the one that says no.
    auth = NegotiateAuth(ALICE, "wrong", allow_ntlm=False)
    async with ExClient() as client:
        with pytest.raises(AuthenticationError, match="kerberos") as info:
            await client.get(localhost_url(iis), auth=auth)
        assert "Preauthentication failed" in str(info.value)
        assert [(r.scheme, r.status) for r in iis.log] == [(None, 401)]
        assert_pool_clean(client)


async def test_kerberos_wrong_password_with_ntlm_allowed_falls_back_and_gets_the_401(
    iis: IISLikeServer,
) -> None:
    # SPNEGO drops Kerberos when the KDC refuses the password and tries NTLM, which the
    # server rejects: the final 401 is returned, once.
    async with ExClient() as client:
        response = await client.get(localhost_url(iis), auth=NegotiateAuth(ALICE, "wrong"))
        assert response.status_code == 401
        assert [(r.ntlm_message, r.status) for r in iis.log] == [(None, 401), (1, 401), (3, 401)]


async def test_kerberos_spn_follows_the_url_host_unless_hostname_is_given(
    iis: IISLikeServer,
) -> None:
    async with ExClient() as client:
        # http://127.0.0.1 -> SPN HTTP/127.0.0.1, which the realm does not have.
        with pytest.raises(AuthenticationError, match="not found in Kerberos database"):
            await client.get(iis.url + "/", auth=NegotiateAuth(allow_ntlm=False))
        assert iis.handshakes_completed == 0

        auth = NegotiateAuth(hostname="localhost", allow_ntlm=False)
        response = await client.get(iis.url + "/", auth=auth)
        assert response.status_code == 200
        assert response.json()["user"] == ALICE
        assert_kerberos(iis)
        assert_pool_clean(client)


async def test_kerberos_unknown_spn_falls_back_to_ntlm(iis: IISLikeServer) -> None:
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=NegotiateAuth(ALICE, ALICE_PASSWORD))
        assert response.status_code == 200
        assert response.json()["user"] == ALICE
        assert [(r.ntlm_message, r.status, r.mechanism) for r in iis.log] == [
            (None, 401, None),
            (1, 401, None),
            (3, 200, "ntlm"),
        ]


async def test_kerberos_only_never_reuses_a_connection_authenticated_through_ntlm(
    iis: IISLikeServer,
) -> None:
    async with ExClient() as client:
        fallback = await client.get(iis.url + "/", auth=NegotiateAuth(ALICE, ALICE_PASSWORD))
        assert fallback.status_code == 200
        assert iis.log[-1].mechanism == "ntlm"

        strict = NegotiateAuth(ALICE, ALICE_PASSWORD, hostname="localhost", allow_ntlm=False)
        response = await client.get(iis.url + "/", auth=strict)
        assert response.status_code == 200
        assert iis.log[-1].mechanism == "kerberos"
        assert_pool_clean(client)


async def test_kerberos_no_ticket_and_no_password(iis: IISLikeServer, no_ccache: Path) -> None:
    async with ExClient() as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get(localhost_url(iis), auth=NegotiateAuth(allow_ntlm=False))
        message = str(info.value)
        assert "Negotiate handshake with localhost failed" in message
        assert "No Kerberos credentials available" in message
        assert isinstance(info.value.request, httpx.Request)
        assert [(r.scheme, r.status) for r in iis.log] == [(None, 401)]  # no token was sent
        assert_pool_clean(client)


async def test_kerberos_200_requests_20_at_a_time_on_5_connections(iis: IISLikeServer) -> None:
    auth = NegotiateAuth()
    n = 200
    statuses: list[int] = []
    users: set[str] = set()

    async def worker(jobs: Iterator[int]) -> None:
        for i in jobs:
            response = await client.get(localhost_url(iis, f"/r/{i}"), auth=auth)
            statuses.append(response.status_code)
            users.add(response.json()["user"])

    async with ExClient(limits=httpx.Limits(max_connections=5), timeout=30) as client:
        jobs = iter(range(n))
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(worker, jobs)
        assert statuses == [200] * n
        assert users == {ALICE}
        assert iis.max_open_connections <= 5
        # One handshake per connection, one extra exchange (the anonymous 401) for each.
        assert iis.handshakes_completed == iis.connections_opened <= 5
        assert iis.requests_total <= n + iis.connections_opened
        assert_kerberos(iis, handshakes=iis.connections_opened)
        assert_pool_clean(client)


async def test_kerberos_https_with_channel_binding(
    iis_https: IISLikeServer, client_ssl_context: ssl.SSLContext
) -> None:
    async with ExClient(verify=client_ssl_context) as client:
        response = await client.get(localhost_url(iis_https), auth=NegotiateAuth())
        assert response.status_code == 200
        assert response.json()["user"] == ALICE
        assert_kerberos(iis_https)
        assert [r.channel_binding for r in iis_https.log] == [None, "match"]


async def test_kerberos_https_without_channel_binding_is_refused(
    iis_https: IISLikeServer, client_ssl_context: ssl.SSLContext
) -> None:
    async with ExClient(verify=client_ssl_context) as client:
        auth = NegotiateAuth(channel_binding=False)
        response = await client.get(localhost_url(iis_https), auth=auth)
        assert response.status_code == 401  # returned once, no retry loop
        assert iis_https.requests_total == 2
        rejected = iis_https.log[-1]
        assert rejected.channel_binding == "none"
        assert rejected.error == "Kerberos authenticator carries no channel binding"
        assert iis_https.handshakes_completed == 0


# -- rejected logins, mutual_auth, preemptive (issue 13) -------------------------------------


async def test_kerberos_rejected_by_the_server_with_a_spnego_reject_token_returns_the_401(
    kdc: LoopbackKDC, user_file: Path, ca: trustme.CA, client_ssl_context: ssl.SSLContext
) -> None:
    # The Kerberos AP-REQ reaches the server, which refuses it (no channel binding) the way
    # mod_auth_gssapi does: a final 401 with an SPNEGO reject token. Returned once.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    with IISLikeServer(
        user_file=user_file, ssl_context=context, require_channel_binding=True, spnego_reject=True
    ) as server:
        async with ExClient(verify=client_ssl_context) as client:
            response = await client.get(
                localhost_url(server), auth=NegotiateAuth(channel_binding=False)
            )
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Negotiate oQcwBaADCgEC"
            assert [(r.scheme, r.status, r.ntlm_message) for r in server.log] == [
                (None, 401, None),
                ("Negotiate", 401, None),  # Kerberos, no NTLM
            ]
            assert server.log[-1].error == "Kerberos authenticator carries no channel binding"
            assert_pool_clean(client)


async def test_kerberos_wrong_password_ntlm_fallback_rejected_with_a_spnego_reject_token(
    kdc: LoopbackKDC, user_file: Path, no_ccache: Path
) -> None:
    # The KDC refuses the password, SPNEGO falls back to NTLM, and the server's SPNEGO reject
    # of the type 3 message ends it: the final 401, not an AuthenticationError.
    with IISLikeServer(user_file=user_file, spnego_reject=True) as server:
        async with ExClient() as client:
            response = await client.get(localhost_url(server), auth=NegotiateAuth(ALICE, "wrong"))
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Negotiate oQcwBaADCgEC"
            assert [(r.ntlm_message, r.status) for r in server.log] == [
                (None, 401),
                (1, 401),
                (3, 401),
            ]


@pytest.mark.parametrize(
    ("final_token", "mutual_auth", "error"),
    [
        ("send", "required", None),
        ("omit", "required", "carried no final token to prove its identity"),
        ("omit", "optional", None),
        ("omit", "disabled", None),
        ("corrupt", "required", "final token does not prove its identity"),
        ("corrupt", "optional", "final token does not prove its identity"),
        ("corrupt", "disabled", None),
    ],
)
async def test_kerberos_mutual_auth(
    kdc: LoopbackKDC, user_file: Path, final_token: str, mutual_auth: str, error: str | None
) -> None:
    with IISLikeServer(user_file=user_file, final_token=final_token) as server:
        auth = NegotiateAuth(mutual_auth=mutual_auth)
        async with ExClient() as client:
            if error is None:
                response = await client.get(localhost_url(server), auth=auth)
                assert response.status_code == 200
                assert response.json()["user"] == ALICE
            else:
                with pytest.raises(AuthenticationError, match=error) as info:
                    await client.get(localhost_url(server), auth=auth)
                message = str(info.value)
                assert message.startswith("Negotiate mutual authentication with ")
                assert "oQcw" not in message
                assert "YII" not in message
            assert_kerberos(server)
            assert_pool_clean(client)


@pytest.mark.parametrize("final_token", ["omit", "corrupt"])
async def test_kerberos_mutual_auth_failure_closes_the_connection(
    kdc: LoopbackKDC, user_file: Path, final_token: str
) -> None:
    # The server thinks the connection is authenticated. Kept, it would serve the next
    # request of this identity without a handshake, so without any check of the server.
    with IISLikeServer(user_file=user_file, final_token=final_token) as server:
        auth = NegotiateAuth()
        async with ExClient() as client:
            for attempt in (1, 2):
                with pytest.raises(AuthenticationError, match="mutual authentication"):
                    await client.get(localhost_url(server, f"/{attempt}"), auth=auth)
                assert server.connections_opened == attempt
                assert server.handshakes_completed == attempt
            assert_pool_clean(client)


async def test_kerberos_mutual_auth_required_is_the_default(
    kdc: LoopbackKDC, user_file: Path
) -> None:
    with IISLikeServer(user_file=user_file, final_token="omit") as server:
        async with ExClient() as client:
            with pytest.raises(AuthenticationError, match="mutual_auth='required'"):
                await client.get(localhost_url(server), auth=NegotiateAuth())


async def test_kerberos_preemptive_one_round_trip_on_a_new_connection(
    iis: IISLikeServer,
) -> None:
    auth = NegotiateAuth(preemptive=True)
    async with ExClient() as client:
        first = await client.get(localhost_url(iis, "/one"), auth=auth)
        assert first.status_code == 200
        assert first.json()["handshake"] is True
        # The AP-REQ went with the first request: no anonymous 401.
        assert [(r.scheme, r.status) for r in iis.log] == [("Negotiate", 200)]
        second = await client.get(localhost_url(iis, "/two"), auth=auth)
        assert second.status_code == 200
        assert second.json()["handshake"] is False
        assert [(r.scheme, r.status) for r in iis.log][-1] == (None, 200)
        assert iis.requests_total == 2
        assert_kerberos(iis)
        assert_pool_clean(client)


async def test_kerberos_preemptive_https_binds_to_the_new_connection(
    iis_https: IISLikeServer, client_ssl_context: ssl.SSLContext
) -> None:
    async with ExClient(verify=client_ssl_context) as client:
        auth = NegotiateAuth(preemptive=True)
        response = await client.get(localhost_url(iis_https), auth=auth)
        assert response.status_code == 200
        assert [(r.status, r.channel_binding) for r in iis_https.log] == [(200, "match")]
        assert_kerberos(iis_https)


async def test_kerberos_preemptive_to_a_page_without_login_is_not_a_mutual_auth_failure(
    kdc: LoopbackKDC, server: LoopbackServer
) -> None:
    # The AP-REQ went out unasked; the server ignored it and answered 200 with no token, as
    # it answers anonymous requests: nothing was authenticated, so nothing to prove.
    async with ExClient() as client:
        url = f"http://localhost:{server.port}/"
        response = await client.get(url, auth=NegotiateAuth(preemptive=True))
        assert response.status_code == 200
        assert server.log[0].authorization is not None
        assert server.log[0].authorization.startswith("Negotiate ")
