"""Rejected logins and ``preemptive=`` against a real Apache 2.4 + mod_auth_gssapi +
gss-ntlmssp (``tests/servers/apache.py``, from the keep-alive-retry branch): the SPNEGO
reject token here is the real one, not ``IISLikeServer(spnego_reject=True)``'s copy of it.

Skipped while ``tests/servers/apache.py`` is not in the tree, and, like tests/test_apache.py,
when the Debian packages are missing unless ``HTTPX_EXT_REQUIRE_APACHE=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from httpx_extensions import CONN_ID, ExClient, NegotiateAuth, NTLMAuth

from .conftest import assert_pool_clean
from .servers import write_user_file

apache_module = pytest.importorskip("tests.servers.apache", reason="tests/servers/apache.py")

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")


@pytest.fixture(scope="module")
def apache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    reason = apache_module.apache_unavailable()
    if reason is not None:
        if os.environ.get("HTTPX_EXT_REQUIRE_APACHE") == "1":
            pytest.fail(f"HTTPX_EXT_REQUIRE_APACHE=1 but {reason}")
        pytest.skip(reason)
    users = write_user_file(
        tmp_path_factory.mktemp("apache") / "users.txt", [("EXAMPLE", "alice", ALICE[1])]
    )
    with apache_module.ApacheNTLMServer(users) as server:
        yield server


@pytest.fixture
def server(apache: Any) -> Any:
    apache.reset_log()
    return apache


async def test_apache_negotiate_wrong_password_returns_the_final_401_with_the_reject_token(
    server: Any,
) -> None:
    async with ExClient() as client:
        response = await client.get(server.url + "/", auth=NegotiateAuth(ALICE[0], "wrong"))
        assert response.status_code == 401
        assert response.headers.get_list("WWW-Authenticate") == ["Negotiate oQcwBaADCgEC"]
        assert_pool_clean(client)
    assert server.statuses(at_least=3) == [401, 401, 401]  # once: no retry loop
    assert server.connections() == 1


@pytest.mark.parametrize("auth_class", [NTLMAuth, NegotiateAuth])
async def test_apache_preemptive_skips_the_anonymous_401(
    server: Any, auth_class: type[NTLMAuth] | type[NegotiateAuth]
) -> None:
    async with ExClient(auth=auth_class(*ALICE, preemptive=True)) as client:
        first = await client.get(server.url + "/")
        second = await client.get(server.url + "/")
        assert (first.status_code, first.headers["X-Remote-User"]) == (200, ALICE[0])
        assert second.extensions[CONN_ID] == first.extensions[CONN_ID]
        assert "Authorization" not in second.request.headers
        assert_pool_clean(client)
    # NEGOTIATE with the request -> challenge, AUTHENTICATE -> 200; then no handshake.
    assert server.statuses(at_least=3) == [401, 200, 200]
    assert server.connections() == 1
