"""ExClient's fast paths meet what httpx accepts: str subclasses as URLs, sync bodies refused
as httpx refuses them, cookies from responses that did not come from our pool."""

from __future__ import annotations

import httpx
import pytest

from httpx_extensions import ExClient

from .conftest import assert_pool_clean
from .servers import LoopbackServer

pytestmark = pytest.mark.anyio


class URLString(str):
    """A str subclass, as some settings libraries hand out URLs."""


async def test_client_url_given_as_a_str_subclass(server: LoopbackServer) -> None:
    async with ExClient(base_url=URLString(server.url)) as client:
        absolute = await client.get(URLString(server.url + "/"))
        relative = await client.get(URLString("/"))
        assert absolute.status_code == relative.status_code == 200
        assert relative.request.url == httpx.URL(server.url + "/")
        assert_pool_clean(client)


async def test_client_sync_request_body_is_refused_as_httpx_refuses_it(
    server: LoopbackServer,
) -> None:
    async with ExClient() as client:
        request = client.build_request("POST", server.url + "/echo", content=iter([b"x"]))
        with pytest.raises(RuntimeError, match="sync request with an AsyncClient"):
            await client.send(request)
        assert_pool_clean(client)


async def test_client_cookies_from_a_mounted_mock_transport_are_kept() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/set":
            return httpx.Response(200, headers={"Set-Cookie": "mocked=1; Path=/"})
        return httpx.Response(200, text=request.headers.get("Cookie", ""))

    async with ExClient(transport=httpx.MockTransport(handler)) as client:
        await client.get("http://mock.test/set")
        assert client.cookies.get("mocked") == "1"
        assert (await client.get("http://mock.test/seen")).text == "mocked=1"
