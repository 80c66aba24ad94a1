"""State a user sees across requests on pooled connections: cookies set by a server, the
identity a connection carries, and the flow scope of ``ExClient.send()``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import httpx
import pytest

from httpx_extensions import CONN_ID, ExClient, NTLMAuth
from httpx_extensions._pool import Flow, current_flow

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file

pytestmark = pytest.mark.anyio

USERS = [("EXAMPLE", "alice", "Passw0rd"), ("EXAMPLE", "bob", "hunter2")]
ALICE = ("EXAMPLE\\alice", "Passw0rd")
BOB = ("EXAMPLE\\bob", "hunter2")


# Cookies on pooled responses.


class _CookieHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1: /set sets cookies, /seen answers with the Cookie header it got."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str]]  # (path, Cookie header), shared by the server's threads

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Cookie", "")))
        if self.path == "/set":
            body = b"set"
            self.send_response(200)
            self.send_header("Set-Cookie", "session=abc123; Path=/")
            # Lower case, as many servers write it: header names are case-insensitive.
            self.send_header("set-cookie", "theme=dark; Path=/")
        elif self.path == "/set-chunked":
            body = b""
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("SET-COOKIE", "streamed=yes; Path=/")
        else:
            body = self.headers.get("Cookie", "").encode()
            self.send_response(200)
        if self.path != "/set-chunked":
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def cookie_server() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("Handler", (_CookieHandler,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


async def test_client_cookie_set_on_a_pooled_response_is_sent_back(
    cookie_server: tuple[str, list[tuple[str, str]]],
) -> None:
    url, seen = cookie_server
    async with ExClient() as client:
        set_response = await client.get(url + "/set")
        assert set_response.extensions[CONN_ID]  # served by our pool, not a mock
        assert dict(client.cookies) == {"session": "abc123", "theme": "dark"}
        echoed = await client.get(url + "/seen")
        assert echoed.extensions[CONN_ID] == set_response.extensions[CONN_ID]
        assert sorted(echoed.text.split("; ")) == ["session=abc123", "theme=dark"]
        assert_pool_clean(client)
    assert seen[0] == ("/set", "")


async def test_client_cookie_set_on_a_streamed_chunked_response_is_kept(
    cookie_server: tuple[str, list[tuple[str, str]]],
) -> None:
    url, _seen = cookie_server
    async with ExClient() as client:
        async with client.stream("GET", url + "/set-chunked") as response:
            assert await response.aread() == b"hello"
        assert client.cookies.get("streamed") == "yes"
        assert (await client.get(url + "/seen")).text == "streamed=yes"
        assert_pool_clean(client)


async def test_client_response_without_cookies_leaves_the_jar_alone(
    cookie_server: tuple[str, list[tuple[str, str]]],
) -> None:
    url, _seen = cookie_server
    async with ExClient(cookies={"given": "1"}) as client:
        assert (await client.get(url + "/seen")).text == "given=1"
        assert dict(client.cookies) == {"given": "1"}


# Identities on idle connections (the pool's idle pick, one request at a time).


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("state") / "users.txt", USERS)


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


async def test_client_idle_authenticated_connection_never_serves_another_identity(
    iis: IISLikeServer,
) -> None:
    # Sequential requests: each finds the previous one's connection IDLE, so every pick
    # after the first goes through the idle stacks, where a partition mix-up would hand
    # alice's authenticated connection to the next caller.
    async with ExClient() as client:
        alice = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert alice.status_code == 200
        assert alice.json()["user"] == "EXAMPLE\\alice"

        anonymous = await client.get(iis.url + "/")
        assert anonymous.status_code == 401  # not served on alice's connection
        assert anonymous.extensions[CONN_ID] != alice.extensions[CONN_ID]

        bob = await client.get(iis.url + "/", auth=NTLMAuth(*BOB))
        assert bob.status_code == 200
        assert bob.json()["user"] == "EXAMPLE\\bob"
        assert bob.extensions[CONN_ID] != alice.extensions[CONN_ID]

        # Each identity still reuses its own idle connection, without a new handshake.
        handshakes = iis.handshakes_completed
        again = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert again.json()["user"] == "EXAMPLE\\alice"
        assert again.extensions[CONN_ID] == alice.extensions[CONN_ID]
        assert iis.handshakes_completed == handshakes
        assert_pool_clean(client)
    users = [r.user for r in iis.log if r.status == 200]
    assert users == ["EXAMPLE\\alice", "EXAMPLE\\bob", "EXAMPLE\\alice"]


# The flow scope of send().


async def test_client_flow_variable_is_unset_after_each_send(
    cookie_server: tuple[str, list[tuple[str, str]]],
) -> None:
    url, _seen = cookie_server
    inside: list[Flow | None] = []

    async def record(request: httpx.Request) -> None:
        inside.append(current_flow.get())

    async with ExClient(event_hooks={"request": [record]}) as client:
        assert current_flow.get() is None
        for _ in range(3):
            await client.get(url + "/seen")
            assert current_flow.get() is None
        async with client.stream("GET", url + "/set-chunked") as response:
            await response.aread()
        assert current_flow.get() is None
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get("ftp://127.0.0.1/")
        assert current_flow.get() is None
    # Every top-level send ran in a flow of its own, not chained onto an ended one.
    flows = [flow for flow in inside if flow is not None]
    assert len(flows) == len(inside) == 5  # the ftp request ran its hook before failing
    assert len({id(flow) for flow in flows}) == 5
    assert [flow.parent for flow in flows] == [None] * 5
    assert not any(flow.live for flow in flows)


async def test_client_send_inside_an_event_hook_is_a_child_flow(
    cookie_server: tuple[str, list[tuple[str, str]]],
) -> None:
    url, _seen = cookie_server
    flows: dict[str, Flow | None] = {}

    async def on_response(response: httpx.Response) -> None:
        if response.request.url.path == "/set":
            flows["outer"] = current_flow.get()
            await client.get(url + "/seen")
            flows["after-inner"] = current_flow.get()

    async def on_request(request: httpx.Request) -> None:
        if request.url.path == "/seen":
            flows["inner"] = current_flow.get()

    async with ExClient(event_hooks={"request": [on_request], "response": [on_response]}) as (
        client
    ):
        await client.get(url + "/set")
        assert current_flow.get() is None
        assert_pool_clean(client)
    outer, inner = flows["outer"], flows["inner"]
    assert outer is not None
    assert inner is not None
    assert inner is not outer
    assert inner.parent is outer
    assert outer.parent is None
    assert flows["after-inner"] is outer  # the inner send restored its parent's flow


async def test_client_flow_of_one_task_is_not_seen_by_another(
    cookie_server: tuple[str, list[tuple[str, str]]],
) -> None:
    url, _seen = cookie_server
    parents: list[Flow | None] = []

    async def record(request: httpx.Request) -> None:
        flow = current_flow.get()
        assert flow is not None
        parents.append(flow.parent)

    async with (
        ExClient(event_hooks={"request": [record]}) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(5):
            tg.start_soon(client.get, url + "/seen")
    assert parents == [None] * 5
