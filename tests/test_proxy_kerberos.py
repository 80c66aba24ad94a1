"""Kerberos single sign-on to a proxy: NegotiateAuth() from the ticket cache, against the
loopback AuthProxy accepting with the test realm's keytab (tests/servers/kdc.py).

A file of its own because the KDC fixture owns process-wide KRB5_* variables for the
module's lifetime (see tests/test_kerberos.py). The realm has the service ``HTTP/localhost``
only, so the auth names that host for its SPN (the proxy listens on 127.0.0.1).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from httpx_extensions import ExClient, NegotiateAuth, ProxyAuthenticationError
from httpx_extensions.testing import AuthProxy

from .conftest import assert_pool_clean
from .servers import LoopbackServer, write_user_file
from .servers.kdc import LoopbackKDC, kerberos_unavailable

pytestmark = pytest.mark.anyio

REALM = "HTTPX-EXT.TEST"
ALICE = f"alice@{REALM}"
ALICE_PASSWORD = "Al1ce-pw"


@pytest.fixture(scope="module")
def kdc() -> Iterator[LoopbackKDC]:
    reason = kerberos_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with LoopbackKDC(realm=REALM, users={"alice": ALICE_PASSWORD}) as realm:
        realm.kinit("alice")
        yield realm


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(
        tmp_path_factory.mktemp("proxy-kerberos") / "users.txt", [("", ALICE, ALICE_PASSWORD)]
    )


@pytest.fixture
def proxy(kdc: LoopbackKDC, user_file: Path) -> Iterator[AuthProxy]:
    with AuthProxy(user_file=user_file, schemes=("Negotiate",)) as running:
        yield running
    assert running.errors == []
    assert running.proxy_credentials_forwarded == 0


async def test_proxy_kerberos_single_sign_on_for_forward_and_connect(
    proxy: AuthProxy, ca: trustme.CA, client_ssl_context: ssl.SSLContext
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with LoopbackServer() as origin, LoopbackServer(ssl_context=context) as tls_origin:
        sso = NegotiateAuth(hostname="localhost", allow_ntlm=False)
        async with ExClient(proxy=proxy.url, proxy_auth=sso, verify=client_ssl_context) as client:
            for url in (origin.url, origin.url, tls_origin.url):
                assert (await client.get(url + "/")).status_code == 200
            assert_pool_clean(client)
    passed = [r for r in proxy.log if r.status == 200 and r.handshake]
    assert [(r.method, r.mechanism, r.user) for r in passed] == [
        ("GET", "kerberos", ALICE),
        ("CONNECT", "kerberos", ALICE),
    ]
    assert all(r.ntlm_message is None for r in proxy.log)
    # Kerberos takes one leg: anonymous 407, then the AP-REQ; later requests need nothing;
    # the CONNECT starts with the token at once.
    assert [(r.method, r.status, r.scheme) for r in proxy.log] == [
        ("GET", 407, None),
        ("GET", 200, "Negotiate"),
        ("GET", 200, None),
        ("CONNECT", 200, "Negotiate"),
    ]


async def test_proxy_current_user_is_never_used_unasked(proxy: AuthProxy) -> None:
    with LoopbackServer() as origin:
        async with ExClient(proxy=proxy.url) as client:
            with pytest.raises(ProxyAuthenticationError, match="no proxy credentials"):
                await client.get(origin.url + "/")
    assert [r.scheme for r in proxy.log] == [None]
