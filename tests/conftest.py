"""Shared fixtures: loopback servers (each on its own thread), both anyio backends."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import anyio
import pytest
import trustme

from httpx_extensions import ConnectionState, ExClient

from .servers import LoopbackProxy, LoopbackServer


@pytest.fixture(scope="session", autouse=True)
def _kerberos_stays_on_this_machine() -> Iterator[None]:
    """With gssapi installed, Negotiate tries Kerberos first and would look up the KDC of
    /etc/krb5.conf's realm off the machine: give the whole run a Kerberos that reaches
    nothing (tests/test_kerberos.py brings its own loopback KDC)."""
    from .servers.kdc import isolated_kerberos_env

    with isolated_kerberos_env():
        yield


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def client_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def other_server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def https_server(ca: trustme.CA) -> Iterator[LoopbackServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with LoopbackServer(ssl_context=context) as srv:
        yield srv


@pytest.fixture
def proxy() -> Iterator[LoopbackProxy]:
    with LoopbackProxy() as prx:
        yield prx


def assert_pool_clean(client: ExClient) -> None:
    """Nothing may be left checked out or reserved once every send() has returned."""
    leftover = [
        info
        for info in client.connections
        if info.state
        in (ConnectionState.ACTIVE, ConnectionState.RESERVED, ConnectionState.CONNECTING)
    ]
    assert leftover == [], f"connections left busy: {leftover}"


async def settled(condition: Callable[[], bool]) -> None:
    """Wait until another thread (a loopback server's) makes ``condition`` true, as when the
    server has closed a connection: its counters change on its own thread, at its own pace.
    The bound turns a hang into a failure; nothing is measured."""
    with anyio.fail_after(30):
        while not condition():  # noqa: ASYNC110 - another thread's counter
            await anyio.sleep(0.005)
