"""ExTransport reuses the (name, value) pairs made for the last request's headers when the
next request's are equal: every request still goes out with exactly its own headers.
"""

from __future__ import annotations

import httpx
import pytest

from httpx_extensions import ExClient

from .conftest import assert_pool_clean
from .servers import LoopbackServer

pytestmark = pytest.mark.anyio


def _sent(response: httpx.Response) -> list[tuple[str, str]]:
    return [(name, value) for name, value in response.json()["headers"]]


async def test_transport_headers_each_request_sends_its_own(server: LoopbackServer) -> None:
    url = server.url + "/echo"
    async with ExClient(headers={"X-Client": "one"}) as client:
        first = await client.get(url)
        same = await client.get(url)
        extra = await client.get(url, headers={"X-Extra": "a"})
        changed_value = await client.get(url, headers={"X-Extra": "b"})
        client.headers["X-Client"] = "two"  # the client's own headers, changed in place
        after_change = await client.get(url)
        request = client.build_request("GET", url)
        request.headers["X-Late"] = "set after build"
        late = await client.send(request)
        back = await client.get(url)
        assert_pool_clean(client)
    assert _sent(first) == _sent(same)
    assert ("X-Client", "one") in _sent(first)
    assert ("X-Extra", "a") in _sent(extra)
    assert ("X-Extra", "b") in _sent(changed_value)
    assert not any(name == "X-Extra" for name, _ in _sent(after_change))
    assert ("X-Client", "two") in _sent(after_change)
    assert ("X-Client", "one") not in _sent(after_change)
    assert _sent(late) == [*_sent(after_change), ("X-Late", "set after build")]
    assert _sent(back) == _sent(after_change)
    assert server.requests_total == 7


async def test_transport_headers_same_names_other_order(server: LoopbackServer) -> None:
    url = server.url + "/echo"
    async with ExClient() as client:
        ab = await client.get(url, headers=[("X-A", "1"), ("X-B", "2")])
        ba = await client.get(url, headers=[("X-B", "2"), ("X-A", "1")])
    names = [[name for name, _ in _sent(r) if name.startswith("X-")] for r in (ab, ba)]
    assert names == [["X-A", "X-B"], ["X-B", "X-A"]]


async def test_transport_headers_one_request_changed_and_sent_again(
    server: LoopbackServer,
) -> None:
    async with ExClient() as client:
        request = client.build_request("GET", server.url + "/echo")
        before = await client.send(request)
        request.headers["X-Again"] = "yes"  # the same Headers object, changed in place
        again = await client.send(request)
    assert not any(name == "X-Again" for name, _ in _sent(before))
    assert _sent(again) == [*_sent(before), ("X-Again", "yes")]
