"""What an auth object remembers across requests stays bounded, oldest-used first out: the NTLM
template contexts (one per SPN host, so the password's hashes are derived once per host) and
the conn_ids of authenticated connections (how a server that re-challenges them is spotted).
The bounds are lowered here so that a few real handshakes against the IIS-like server on
loopback go past them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spnego

from httpx_extensions import CONN_ID, ExClient, NTLMAuth, _auth

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(
        tmp_path_factory.mktemp("bounds") / "users.txt", [("EXAMPLE", "alice", "Passw0rd")]
    )


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SPN host of every context pyspnego is asked to build (a template clone is not)."""
    hosts: list[str] = []
    real = spnego.client

    def counting(*args: Any, **kwargs: Any) -> Any:
        hosts.append(kwargs["hostname"])
        return real(*args, **kwargs)

    monkeypatch.setattr(spnego, "client", counting)
    return hosts


async def test_auth_ntlm_templates_keep_the_most_recently_used_hosts(
    iis: IISLikeServer, created: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_auth, "_NTLM_TEMPLATES", 2)
    auth = NTLMAuth(*ALICE)
    port = iis.url.rsplit(":", 1)[1]
    # Three spellings of 127.0.0.1: three SPN hosts, so three template keys.
    a, b, c = "127.0.0.1", "127.1", "2130706433"
    for host in (a, b, a, c, a, b):
        # A new client each time: a new connection, so a new handshake and a new context.
        async with ExClient() as client:
            response = await client.get(f"http://{host}:{port}/", auth=auth)
            assert response.status_code == 200
            assert response.json()["user"] == ALICE[0]
            assert_pool_clean(client)
    # a and b are built; a is used again (so kept, and b is now the oldest); c pushes b out;
    # a is still kept; b is built again.
    assert created == [a, b, c, b]
    assert iis.handshakes_completed == 6


async def test_auth_forgets_the_oldest_authenticated_connection(
    user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_auth, "_REMEMBERED_CONNECTIONS", 1)
    auth = NTLMAuth(*ALICE)
    with (
        IISLikeServer(user_file=user_file, schemes=("NTLM",), auth_per_request=True) as x,
        IISLikeServer(user_file=user_file, schemes=("NTLM",), auth_per_request=True) as y,
    ):
        async with ExClient() as client:
            first = await client.get(x.url + "/", auth=auth)
            assert first.status_code == 200
            # Another connection authenticates: with room for one, x's is forgotten.
            assert (await client.get(y.url + "/", auth=auth)).status_code == 200
            # x challenges its connection again, but the auth no longer knows it was
            # authenticated, so it does not take x for a server that re-challenges...
            again = await client.get(x.url + "/", auth=auth)
            assert again.status_code == 200
            assert again.extensions[CONN_ID] == first.extensions[CONN_ID]
            before = x.requests_total
            # ...and the next request still opens with an anonymous exchange (3, not 2).
            assert (await client.get(x.url + "/", auth=auth)).status_code == 200
            assert x.requests_total - before == 3
            assert_pool_clean(client)
        assert x.errors == []
        assert y.errors == []


async def test_auth_remembers_an_authenticated_connection_within_the_bound(
    user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_auth, "_REMEMBERED_CONNECTIONS", 1)
    auth = NTLMAuth(*ALICE)
    with IISLikeServer(user_file=user_file, schemes=("NTLM",), auth_per_request=True) as x:
        async with ExClient() as client:
            assert (await client.get(x.url + "/", auth=auth)).status_code == 200
            # x challenges the connection it authenticated: it re-challenges every request,
            # so the auth goes preemptive there...
            assert (await client.get(x.url + "/", auth=auth)).status_code == 200
            before = x.requests_total
            # ...and the next request sends its type 1 at once: 2 exchanges, not 3.
            assert (await client.get(x.url + "/", auth=auth)).status_code == 200
            assert x.requests_total - before == 2
            assert_pool_clean(client)
        assert x.errors == []


async def test_auth_a_connection_used_again_is_remembered_longest(
    user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_auth, "_REMEMBERED_CONNECTIONS", 2)
    auth = NTLMAuth(*ALICE)
    with (
        IISLikeServer(user_file=user_file, schemes=("NTLM",)) as x,
        IISLikeServer(user_file=user_file, schemes=("NTLM",)) as y,
        IISLikeServer(user_file=user_file, schemes=("NTLM",)) as z,
    ):
        async with ExClient() as client:
            first = await client.get(x.url + "/", auth=auth)
            assert (await client.get(y.url + "/", auth=auth)).status_code == 200
            # x's connection serves again (no handshake): it becomes the most recently used...
            assert (await client.get(x.url + "/", auth=auth)).extensions[CONN_ID] == (
                first.extensions[CONN_ID]
            )
            assert x.handshakes_completed == 1
            # ...so z's connection pushes y's out, not x's.
            assert (await client.get(z.url + "/", auth=auth)).status_code == 200
            # x now challenges every request, its authenticated connection too: the auth
            # knows that connection, so it goes preemptive for x.
            x.auth_per_request = True
            assert (await client.get(x.url + "/", auth=auth)).status_code == 200
            before = x.requests_total
            assert (await client.get(x.url + "/", auth=auth)).status_code == 200
            assert x.requests_total - before == 2
            assert_pool_clean(client)
        assert x.errors == []
        assert y.errors == []
        assert z.errors == []
