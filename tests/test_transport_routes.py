"""ExTransport keeps where each URL object goes (scheme, port, origin, target) for the next
request to it: requests still go where their URL says, bad URLs are refused every time, and
the cache stays bounded.
"""

from __future__ import annotations

import httpx
import pytest

from httpx_extensions import ExClient, ExTransport
from httpx_extensions import _transport as transport_module

from .conftest import assert_pool_clean
from .servers import LoopbackServer

pytestmark = pytest.mark.anyio


def _transport(client: ExClient) -> ExTransport:
    transport = client._transport
    assert isinstance(transport, ExTransport)
    return transport


async def test_transport_routes_same_url_object_twice_and_equal_urls_apart(
    server: LoopbackServer, other_server: LoopbackServer
) -> None:
    url = httpx.URL(server.url + "/echo?x=1")
    async with ExClient() as client:
        first = await client.get(url)
        again = await client.get(url)
        equal = await client.get(httpx.URL(server.url + "/echo?x=1"))  # another object
        other = await client.get(httpx.URL(other_server.url + "/echo?y=2"))
        assert [r.json()["path"] for r in (first, again, equal, other)] == [
            "/echo?x=1",
            "/echo?x=1",
            "/echo?x=1",
            "/echo?y=2",
        ]
        assert first.extensions["conn_id"] == again.extensions["conn_id"]
        assert other.extensions["conn_id"] != first.extensions["conn_id"]
        assert [info.origin for info in client.connections] == [server.url, other_server.url]
        assert_pool_clean(client)
    assert (server.requests_total, other_server.requests_total) == (3, 1)


async def test_transport_routes_an_entry_is_only_used_for_its_own_url_object(
    server: LoopbackServer, other_server: LoopbackServer
) -> None:
    # As if the object cached for one URL were gone and another had taken its id(): the
    # entry names its URL, and a request for another URL must not use it.
    async with ExClient() as client:
        stale = httpx.URL(other_server.url + "/echo?stale")
        await client.get(stale)
        url = httpx.URL(server.url + "/echo?fresh")
        routes = _transport(client)._routes
        routes[id(url)] = routes.pop(id(stale))
        response = await client.get(url)
        assert response.json()["path"] == "/echo?fresh"
        assert response.request.url == url
    assert (server.requests_total, other_server.requests_total) == (1, 1)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/", "unsupported protocol 'ftp://'"),
        ("//127.0.0.1/", "missing an 'http://' or 'https://' protocol"),
        ("http:///path", "missing a host name"),
    ],
)
async def test_transport_routes_bad_url_refused_every_time(url: str, message: str) -> None:
    # To the transport itself: the client turns some of these into other errors first.
    async with ExTransport() as transport:
        for _ in range(2):
            with pytest.raises(httpx.UnsupportedProtocol, match=message):
                await transport.handle_async_request(httpx.Request("GET", url))
        assert transport._routes == {}


async def test_transport_routes_stay_bounded(server: LoopbackServer) -> None:
    limit = transport_module._ROUTES_MAX
    async with ExClient() as client:
        routes = _transport(client)._routes
        for i in range(limit + 10):
            response = await client.get(server.url + f"/echo?i={i}")
            assert response.json()["path"] == f"/echo?i={i}"
            assert len(routes) <= limit
        assert len(client.connections) == 1
