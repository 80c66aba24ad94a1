"""ExClient's fast paths give what httpx gives.

``ExClient.send`` skips httpx's auth and redirect layers for requests without auth or event
hooks, builds pool responses and bodyless requests attribute by attribute, and keeps
``elapsed`` as seconds until it is read. Each case here runs the same exchange through
``httpx.AsyncClient`` (httpcore's pool) and through ``ExClient``, against one loopback server
that answers from a table of raw responses, and compares everything a user can see.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import logging
import pickle
import typing

import httpx
import pytest

from httpx_extensions import ExClient
from httpx_extensions._network import AsyncioBackend
from httpx_extensions._transport import _Response
from httpx_extensions.testing._loopback import ThreadedLoopbackBase

from .conftest import assert_pool_clean
from .test_client import _BUILD_CALLS, _BUILD_CLIENTS

pytestmark = pytest.mark.anyio

_GZIPPED = gzip.compress(b"compressed " * 20)
_BIG = bytes(range(256)) * 1024  # 256 KiB: arrives over many reads


def _raw(status: bytes, headers: list[bytes], body: bytes = b"") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


# path -> the bytes the server answers with (each a complete keep-alive response).
_RESPONSES: dict[str, bytes] = {
    "/plain": _raw(
        b"200 OK",
        [b"Content-Type: text/plain", b"X-Dup: 1", b"x-dup: 2", b"Content-Length: 5"],
        b"hello",
    ),
    "/charset": _raw(
        b"200 OK",
        [b"Content-Type: text/plain; charset=latin-1", b"Content-Length: 3"],
        b"\xe9t\xe9",
    ),
    "/nocharset": _raw(b"200 OK", [b"Content-Length: 3"], b"\xe9t\xe9"),
    "/utf8-header": _raw(b"200 OK", ["X-Name: Zoë".encode(), b"Content-Length: 2"], b"ok"),
    "/latin1-header": _raw(b"200 OK", [b"X-Name: Zo\xeb", b"Content-Length: 2"], b"ok"),
    "/cookie": _raw(
        b"200 OK",
        [b"Set-Cookie: session=abc; Path=/", b"Set-Cookie: theme=dark", b"Content-Length: 2"],
        b"ok",
    ),
    "/gzip": _raw(
        b"200 OK",
        [b"Content-Encoding: gzip", b"Content-Length: " + str(len(_GZIPPED)).encode()],
        _GZIPPED,
    ),
    "/chunked": _raw(
        b"200 OK", [b"Transfer-Encoding: chunked"], b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    ),
    "/big": _raw(b"200 OK", [b"Content-Length: " + str(len(_BIG)).encode()], _BIG),
    "/empty": _raw(b"204 No Content", []),
    "/custom-reason": _raw(b"299 Quite Fine", [b"Content-Length: 0"]),
    "/error": _raw(b"503 Service Unavailable", [b"Retry-After: 1", b"Content-Length: 4"], b"busy"),
    "/redirect": _raw(b"302 Found", [b"Location: /plain", b"Content-Length: 5"], b"moved"),
    "/redirect-chain": _raw(
        b"301 Moved Permanently", [b"Location: /redirect", b"Content-Length: 0"]
    ),
    "/redirect-no-location": _raw(b"302 Found", [b"Content-Length: 0"]),
    "/redirect-loop": _raw(
        b"307 Temporary Redirect", [b"Location: /redirect-loop", b"Content-Length: 0"]
    ),
    "/redirect-set-cookie": _raw(
        b"303 See Other", [b"Location: /cookie", b"Set-Cookie: hop=1", b"Content-Length: 0"]
    ),
    "/redirect-bad": _raw(b"302 Found", [b"Location: http://[::1", b"Content-Length: 0"]),
}


class CannedServer(ThreadedLoopbackBase):
    """Answers each keep-alive request from ``_RESPONSES`` (bodyless requests only).

    ``/echo`` answers with the request head it received; ``/drop`` closes the connection
    without an answer; ``/split`` sends its head and its body in two writes; ``/stall``
    sends its head and then nothing, until the client goes away (a read timeout to come).
    """

    _thread_name = "canned-http"

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", ssl_context=None)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seq: int
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            method, target_bytes, _ = head.split(b" ", 2)
            target = target_bytes.decode()
            path = target.split("?", 1)[0]
            if path == "/drop":
                return
            if path == "/echo":
                writer.write(_raw(b"200 OK", [b"Content-Length: " + str(len(head)).encode()], head))
            elif path == "/stall":
                writer.write(_raw(b"200 OK", [b"Content-Length: 10"]))
                await writer.drain()
                await reader.read()  # until the client, timed out, closes the connection
                return
            elif path == "/split":
                writer.write(_raw(b"200 OK", [b"Content-Length: 10"]))
                await writer.drain()
                await asyncio.sleep(0.02)
                writer.write(b"0123456789")
            elif method == b"HEAD":  # the head alone, with the headers a GET would get
                writer.write(_RESPONSES[path].split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
            else:
                writer.write(_RESPONSES[path])
            await writer.drain()


@pytest.fixture(scope="module")
def canned() -> typing.Iterator[CannedServer]:
    with CannedServer() as server:
        yield server


def _summary(response: httpx.Response, *, read: bool = True) -> dict[str, typing.Any]:
    """What a user can see of a response (conn_id and the socket aside)."""
    extensions = {
        k: v for k, v in response.extensions.items() if k not in ("conn_id", "network_stream")
    }
    summary: dict[str, typing.Any] = {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "http_version": response.http_version,
        "headers": response.headers.raw,
        "header_encoding": response.headers.encoding,
        "multi_items": response.headers.multi_items(),
        "url": str(response.url),
        "request_method": response.request.method,
        "request_headers": response.request.headers.raw,
        "extensions": extensions,
        "history": [(r.status_code, str(r.url), r.is_closed) for r in response.history],
        "next_request": None
        if response.next_request is None
        else (response.next_request.method, str(response.next_request.url)),
        "is_closed": response.is_closed,
        "is_stream_consumed": response.is_stream_consumed,
        "default_encoding": response.default_encoding,
        "has_redirect_location": response.has_redirect_location,
    }
    if response.is_closed:
        if read:
            summary["content"] = response.content
            summary["text"] = response.text
            summary["encoding"] = response.encoding
        summary["num_bytes_downloaded"] = response.num_bytes_downloaded
        summary["elapsed_type"] = type(response.elapsed)
        assert response.elapsed > datetime.timedelta(0)
        assert all(r.elapsed > datetime.timedelta(0) for r in response.history)
    return summary


async def _both(
    method: str,
    path: str,
    client_kwargs: dict[str, typing.Any],
    server: CannedServer,
    **kwargs: typing.Any,
) -> tuple[dict[str, typing.Any], dict[str, typing.Any]]:
    """The summaries of one exchange through httpx and through ExClient, with cookies and logs."""
    results = []
    for cls in (httpx.AsyncClient, ExClient):
        records: list[str] = []
        handler = _ListHandler(records)
        logger = logging.getLogger("httpx")
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.INFO)
        try:
            async with cls(base_url=server.url, **client_kwargs) as client:
                response = await client.request(method, path, **kwargs)
                summary = _summary(response)
                summary["cookies"] = sorted((c.name, c.value, c.path) for c in client.cookies.jar)
                if isinstance(client, ExClient):
                    await response.aclose()
                    assert_pool_clean(client)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        summary["log"] = records
        results.append(summary)
    return results[0], results[1]


class _ListHandler(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.INFO)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "httpx":
            self.records.append(record.getMessage())


_PATHS = [p for p in _RESPONSES if p != "/redirect-bad"] + ["/echo", "/split"]
_CLIENT_KWARGS = [
    {},
    {"follow_redirects": True},
    {"default_encoding": "latin-1", "headers": {"X-Client": "yes"}},
]


_MATRIX = [
    pytest.param(path, kwargs, id=f"{path}-{name}")
    for path in _PATHS
    for name, kwargs in zip(("default", "follow", "encoding"), _CLIENT_KWARGS, strict=True)
    # (followed forever: see test_fast_path_errors_equal_httpx)
    if not (path == "/redirect-loop" and kwargs.get("follow_redirects"))
]


@pytest.mark.parametrize(("path", "client_kwargs"), _MATRIX)
async def test_fast_path_response_equals_httpx(
    canned: CannedServer, path: str, client_kwargs: dict[str, typing.Any]
) -> None:
    stock, ours = await _both("GET", path, client_kwargs, canned)
    assert ours == stock


@pytest.mark.parametrize("method", ["HEAD", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/plain", "/redirect", "/echo"])
async def test_fast_path_other_methods_equal_httpx(
    canned: CannedServer, method: str, path: str
) -> None:
    stock, ours = await _both(method, path, {"follow_redirects": True}, canned)
    assert ours == stock


@pytest.mark.parametrize("path", ["/plain", "/chunked", "/big", "/redirect", "/gzip"])
async def test_fast_path_streamed_response_equals_httpx(canned: CannedServer, path: str) -> None:
    seen = []
    for cls in (httpx.AsyncClient, ExClient):
        async with cls(base_url=canned.url, follow_redirects=True) as client:
            request = client.build_request("GET", path)
            response = await client.send(request, stream=True)
            before = _summary(response, read=False)
            with pytest.raises(RuntimeError, match="elapsed"):
                _ = response.elapsed  # not known until closed, as in httpx
            chunks = [chunk async for chunk in response.aiter_bytes()]
            seen.append((before, b"".join(chunks), _summary(response, read=False)))
            if isinstance(client, ExClient):
                assert_pool_clean(client)
    assert seen[1] == seen[0]


@pytest.mark.parametrize(
    ("path", "client_kwargs", "expected"),
    [
        ("/drop", {}, httpx.RemoteProtocolError),
        ("/redirect-loop", {"follow_redirects": True, "max_redirects": 3}, httpx.TooManyRedirects),
        ("/plain", {"max_redirects": -1}, httpx.TooManyRedirects),
        ("/redirect-bad", {"follow_redirects": True}, httpx.RemoteProtocolError),
        ("/redirect-bad", {}, httpx.RemoteProtocolError),
    ],
)
async def test_fast_path_errors_equal_httpx(
    canned: CannedServer, path: str, client_kwargs: dict[str, typing.Any], expected: type
) -> None:
    errors = []
    for cls in (httpx.AsyncClient, ExClient):
        async with cls(base_url=canned.url, **client_kwargs) as client:
            with pytest.raises(expected) as info:
                await client.get(path)
            errors.append((type(info.value), str(info.value), str(info.value.request.url)))
            if isinstance(client, ExClient):
                assert_pool_clean(client)
    assert errors[1] == errors[0]


async def test_fast_path_read_timeout_carries_the_request(canned: CannedServer) -> None:
    async with ExClient(base_url=canned.url) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get("/stall", timeout=httpx.Timeout(5.0, read=0.5))
        assert info.value.request.url == canned.url + "/stall"
        assert_pool_clean(client)


async def test_fast_path_history_is_reset_as_httpx() -> None:
    # A transport may hand back a response that already has a history (a mock): httpx
    # replaces it with this send()'s own.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, history=[httpx.Response(301)], content=b"mocked")

    results = []
    for cls in (httpx.AsyncClient, ExClient):
        async with cls(transport=httpx.MockTransport(handler)) as client:
            response = await client.get("http://127.0.0.1:1/")
            results.append((response.history, response.content))
    assert results[1] == results[0] == ([], b"mocked")


async def test_fast_path_closed_client_refuses_as_httpx(canned: CannedServer) -> None:
    messages = []
    for cls in (httpx.AsyncClient, ExClient):
        client = cls(base_url=canned.url)
        await client.get("/plain")
        await client.aclose()
        with pytest.raises(RuntimeError) as info:
            await client.get("/plain")
        messages.append(str(info.value))
    assert messages[1] == messages[0]


async def test_fast_path_ends_with_the_connection_idle_for_the_next_request(
    canned: CannedServer,
) -> None:
    async with ExClient(base_url=canned.url) as client:
        first = await client.get("/plain")
        second = await client.get("/redirect")  # not followed: still the last of its flow
        third = await client.get("/plain")
        assert first.extensions["conn_id"] == second.extensions["conn_id"]
        assert third.extensions["conn_id"] == first.extensions["conn_id"]
        (info,) = client.connections
        assert info.state.name == "IDLE"
        assert not info.reserved
        assert_pool_clean(client)


# What must still go httpx's way: auth, event hooks, and subclasses that override a step.


class _RecordingAuth(httpx.Auth):
    def __init__(self) -> None:
        self.calls = 0

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> typing.AsyncGenerator[httpx.Request, httpx.Response]:
        self.calls += 1
        request.headers["X-Auth"] = "token"
        yield request


@pytest.mark.parametrize("where", ["client", "request"])
async def test_auth_still_runs_its_flow(canned: CannedServer, where: str) -> None:
    auth = _RecordingAuth()
    client_auth = auth if where == "client" else None
    async with ExClient(base_url=canned.url, auth=client_auth) as client:
        if where == "client":
            response = await client.get("/echo")
        else:
            response = await client.get("/echo", auth=auth)
        assert auth.calls == 1
        assert b"\r\nX-Auth: token\r\n" in response.content
        # auth=None on the request turns the client's auth off, as in httpx.
        plain = await client.get("/echo", auth=None)
        assert b"X-Auth" not in plain.content
        assert auth.calls == 1


async def test_credentials_in_the_url_are_sent_as_basic_auth(canned: CannedServer) -> None:
    url = canned.url.replace("http://", "http://user:pa%20ss@") + "/echo"
    bodies = []
    for cls in (httpx.AsyncClient, ExClient):
        async with cls() as client:
            bodies.append((await client.get(url)).content)
    assert b"\r\nAuthorization: Basic dXNlcjpwYSBzcw==\r\n" in bodies[1]
    assert bodies[1] == bodies[0]


async def test_event_hooks_still_see_every_request_and_response(canned: CannedServer) -> None:
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(f"request {request.url.path}")

    async def on_response(response: httpx.Response) -> None:
        seen.append(f"response {response.status_code}")

    hooks = {"request": [on_request], "response": [on_response]}
    async with ExClient(base_url=canned.url, event_hooks=hooks, follow_redirects=True) as client:
        response = await client.get("/redirect")
        assert response.status_code == 200
        assert seen == ["request /redirect", "response 302", "request /plain", "response 200"]
        # Hooks set after construction count too.
        seen.clear()
        client.event_hooks = {"response": [on_response]}
        await client.get("/plain")
        assert seen == ["response 200"]
        assert_pool_clean(client)


async def test_a_request_hook_alone_still_runs(canned: CannedServer) -> None:
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(str(request.url))

    async with ExClient(base_url=canned.url, event_hooks={"request": [on_request]}) as client:
        await client.get("/plain")
    assert seen == [canned.url + "/plain"]


async def test_hand_built_request_gets_the_client_timeout_as_httpx(canned: CannedServer) -> None:
    # A request made without build_request has no timeout extension; send() adds the client's.
    # /stall never sends its body, so only the read timeout ends the second send; 0.5 s is
    # long enough for /plain's answer on a loaded machine.
    timeout = httpx.Timeout(5.0, read=0.5)
    extensions = []
    for cls in (httpx.AsyncClient, ExClient):
        async with cls(timeout=timeout) as client:
            request = httpx.Request("GET", canned.url + "/plain")
            await client.send(request)
            extensions.append(request.extensions)
            with pytest.raises(httpx.ReadTimeout):  # the read timeout is the client's
                await client.send(httpx.Request("GET", canned.url + "/stall"))
    assert extensions[1] == extensions[0] == {"timeout": timeout.as_dict()}


async def test_subclass_overriding_a_send_step_is_called(canned: CannedServer) -> None:
    calls: list[str] = []

    class Audited(ExClient):
        async def _send_handling_redirects(  # type: ignore[no-untyped-def]
            self, request, follow_redirects, history
        ):
            calls.append(str(request.url))
            return await super()._send_handling_redirects(request, follow_redirects, history)

    async with Audited(base_url=canned.url) as client:
        response = await client.get("/plain")
        assert response.content == b"hello"
        assert calls == [canned.url + "/plain"]


# The objects the fast paths build, attribute by attribute against httpx's constructors: if
# httpx changes what its __init__ sets, these fail rather than the fast path drifting.


def _state(obj: object) -> dict[str, typing.Any]:
    state = dict(vars(obj))
    for name, value in state.items():
        if isinstance(value, httpx.Headers):
            state[name] = vars(value)
    return state


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_pool_response_is_built_as_httpx_builds_it() -> None:
    headers = [(b"Content-Type", b"text/plain"), (b"X-A", b"1"), (b"x-a", b"2")]
    extensions = {"http_version": b"HTTP/1.1", "reason_phrase": b"OK"}
    stream = httpx.ByteStream(b"body")
    ours = _Response.from_pool(200, headers, stream, dict(extensions))  # type: ignore[arg-type]
    theirs = _Response(200, headers=headers, stream=stream, extensions=extensions)
    assert _state(ours) == _state(theirs)
    assert list(vars(ours)) == list(vars(theirs))  # same attributes, set in the same order


@pytest.mark.parametrize("client_kwargs", _BUILD_CLIENTS)
@pytest.mark.parametrize(("method", "url", "kwargs"), _BUILD_CALLS)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_bodyless_request_is_built_as_httpx_builds_it(
    client_kwargs: dict, method: str, url: str | httpx.URL, kwargs: dict
) -> None:
    if client_kwargs.get("base_url") is None and isinstance(url, str) and url.startswith("/"):
        url = "http://127.0.0.1:8000" + url
    async with ExClient(**client_kwargs) as ours, httpx.AsyncClient(**client_kwargs) as stock:
        mine = ours.build_request(method, url, **kwargs)
        theirs = stock.build_request(method, url, **kwargs)
        mine_state, their_state = _state(mine), _state(theirs)
        assert b"".join(mine_state.pop("stream")) == b"".join(their_state.pop("stream"))
        assert mine_state == their_state
        assert sorted(vars(mine)) == sorted(vars(theirs))
        # The request owns its headers and extensions: changing them leaves the client's alone.
        mine.headers["X-Later"] = "1"
        mine.extensions["later"] = True
        again = ours.build_request(method, url, **kwargs)
        assert "X-Later" not in again.headers
        assert "later" not in again.extensions


async def test_cookie_jar_emptiness_as_httpx(canned: CannedServer) -> None:
    async with ExClient(base_url=canned.url) as client:
        assert not client.cookies
        await client.get("/cookie")
        assert client.cookies
        assert dict(client.cookies) == {"session": "abc", "theme": "dark"}
        # Cleared by path: the jar keeps an empty domain entry but holds no cookie.
        client.cookies.jar.clear("127.0.0.1", "/")
        assert not client.cookies
        # Cookies set on the client go out with the next (fast-built) request.
        client.cookies = {"set": "here"}
        echoed = await client.get("/echo")
        assert b"\r\nCookie: set=here\r\n" in echoed.content


async def test_elapsed_survives_pickling_and_can_be_set(canned: CannedServer) -> None:
    async with ExClient(base_url=canned.url) as client:
        read_first = await client.get("/plain")
        pickled_first = await client.get("/plain")
        set_first = await client.get("/plain")
    elapsed = read_first.elapsed
    assert pickle.loads(pickle.dumps(read_first)).elapsed == elapsed > datetime.timedelta(0)
    restored = pickle.loads(pickle.dumps(pickled_first))  # elapsed never read before
    assert restored.elapsed == pickled_first.elapsed > datetime.timedelta(0)
    set_first.elapsed = datetime.timedelta(seconds=3)  # elapsed never read before
    assert set_first.elapsed == datetime.timedelta(seconds=3)


# The asyncio stream's buffer: the received bytes object kept as it is, and a bytearray once
# more arrives before it is read.


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("pieces", [1, 3], ids=["one-write", "three-writes"])
async def test_asyncio_stream_reads_every_byte_in_order(pieces: int) -> None:
    data = bytes(range(256)) * 200  # 51,200 bytes: less than one socket read receives
    size = len(data) // pieces
    parts = [data[i * size : (i + 1) * size if i < pieces - 1 else None] for i in range(pieces)]
    all_written = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)  # separate segments, separate data_received calls
        all_written.set()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
    protocol = stream._protocol  # type: ignore[attr-defined]
    buffered = asyncio.Event()  # everything has arrived, none of it read yet
    received_by_protocol = protocol.data_received

    def data_received(chunk: bytes) -> None:
        received_by_protocol(chunk)
        if len(protocol.buffer) == len(data):
            buffered.set()

    protocol.data_received = data_received
    if len(protocol.buffer) == len(data):
        buffered.set()
    try:
        await all_written.wait()
        # Bounded, so that a buffer that loses bytes fails here instead of hanging.
        await asyncio.wait_for(buffered.wait(), 10)
        assert type(protocol.buffer) is (bytes if pieces == 1 else bytearray)
        received = [await stream.read(10_000, timeout=5)]
        assert len(received[0]) == 10_000
        while len(b"".join(received)) < len(data):
            received.append(await stream.read(64 * 1024, timeout=5))
        assert b"".join(received) == data
        assert stream.is_readable() is False
    finally:
        await stream.aclose()
        server.close()
        await server.wait_closed()
