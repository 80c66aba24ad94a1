"""ExClient drives NTLMAuth/NegotiateAuth itself and gives what httpx's auth loop gives.

For our own auth classes ``ExClient.send`` runs the handshake generator directly instead of
httpx's ``_send_handling_auth`` and its auth-flow async generator (a request on an
authenticated connection cost that much more than a plain one). Each case runs the same
exchange both ways, the driven path and httpx's (an auth whose ``_client_driven`` is off),
and compares what a user can see: statuses, history, request headers, errors.
"""

from __future__ import annotations

import typing
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import httpx
import pytest

from httpx_extensions import ExClient, NTLMAuth

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file
from .test_client_fast_path import CannedServer, _summary

pytestmark = pytest.mark.anyio

USER, PASSWORD = "EXAMPLE\\alice", "Passw0rd"


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth-path") / "users.txt"
    return write_user_file(path, [("EXAMPLE", "alice", PASSWORD)], store_hashes=True)


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedServer]:
    with CannedServer() as server:
        yield server


def _auth(driven: bool) -> NTLMAuth:
    auth = NTLMAuth(USER, PASSWORD)
    if not driven:
        auth._client_driven = False  # httpx's send() and auth loop, with our auth flow
    return auth


def _seen(response: httpx.Response) -> dict[str, typing.Any]:
    """_summary without what differs by run: the server's connection serial (a header, and
    in the body, so its length), and the NTLM tokens (a fresh client challenge each)."""
    summary = _summary(response, read=False)
    varying = {"x-conn-seq", "content-length"}
    summary["headers"] = [h for h in summary["headers"] if h[0].lower().decode() not in varying]
    summary["multi_items"] = [h for h in summary["multi_items"] if h[0] not in varying]
    summary["request_headers"] = [
        (k, v.split()[0] if k == b"Authorization" else v) for k, v in summary["request_headers"]
    ]
    summary.pop("num_bytes_downloaded", None)
    summary["history"] = [
        (
            r.status_code,
            str(r.url),
            r.is_closed,
            r.request.headers.get("Authorization", "")[:8],
            [h.status_code for h in r.history],  # each leg's own history, as httpx sets it
        )
        for r in response.history
    ]
    return summary


async def _outcome(
    driven: bool, base_url: str, path: str, **kwargs: typing.Any
) -> list[typing.Any]:
    """What two requests in a row show (the first cold, the second on a warm connection)."""
    client_kwargs = {k: kwargs.pop(k) for k in ("max_redirects", "follow_redirects") if k in kwargs}
    seen: list[typing.Any] = []
    async with ExClient(base_url=base_url, auth=_auth(driven), **client_kwargs) as client:
        for _ in range(2):
            try:
                request = client.build_request("GET", path, headers=kwargs.get("headers"))
                send_kwargs = {"stream": kwargs.get("stream", False)}
                if "send_follow_redirects" in kwargs:  # send()'s own, not the client's
                    send_kwargs["follow_redirects"] = kwargs["send_follow_redirects"]
                response = await client.send(request, **send_kwargs)
            except httpx.HTTPError as exc:
                seen.append((type(exc).__name__, str(exc)))
                continue
            if kwargs.get("stream"):
                seen.append(("unread", response.is_closed, response.is_stream_consumed))
                await response.aread()
            seen.append(_seen(response))
        assert_pool_clean(client)
    return seen


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/", {}),  # a handshake, then a request on the authenticated connection
        ("/", {"stream": True}),
        ("/", {"max_redirects": 0}),  # httpx counts the 401s of the handshake as history
        ("/", {"max_redirects": 1}),
        ("/", {"headers": {"X-Extra": "1"}}),
    ],
)
async def test_client_driven_auth_matches_httpx_on_ntlm(
    iis: IISLikeServer, path: str, kwargs: dict[str, typing.Any]
) -> None:
    driven = await _outcome(True, iis.url, path, **dict(kwargs))
    via_httpx = await _outcome(False, iis.url, path, **dict(kwargs))
    assert driven == via_httpx
    assert driven  # (something was compared)


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/redirect", {"follow_redirects": True}),
        ("/redirect", {}),  # not followed: next_request is set
        ("/redirect-chain", {"follow_redirects": True, "max_redirects": 1}),
        ("/redirect-bad", {}),
        ("/redirect", {"follow_redirects": True, "stream": True}),
        ("/redirect", {"send_follow_redirects": True}),
    ],
)
async def test_client_driven_auth_matches_httpx_on_redirects(
    canned: CannedServer, path: str, kwargs: dict[str, typing.Any]
) -> None:
    # A server that never challenges: the auth's flow is one request (and its redirects).
    driven = await _outcome(True, canned.url, path, **dict(kwargs))
    via_httpx = await _outcome(False, canned.url, path, **dict(kwargs))
    assert driven == via_httpx


async def test_client_driven_auth_skips_httpx_auth_loop(
    iis: IISLikeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    stock = httpx.AsyncClient._send_handling_auth

    async def counting(
        self: httpx.AsyncClient, *args: typing.Any, **kwargs: typing.Any
    ) -> typing.Any:
        calls.append(type(kwargs.get("auth", args[1] if len(args) > 1 else None)).__name__)
        return await stock(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "_send_handling_auth", counting)

    class Wrapped(NTLMAuth):
        """A subclass with its own auth flow: httpx's loop must call it."""

        async def async_auth_flow(
            self, request: httpx.Request
        ) -> AsyncGenerator[httpx.Request, httpx.Response]:
            request.headers["X-Wrapped"] = "1"
            flow = super().async_auth_flow(request)
            try:
                response = yield await flow.__anext__()
                while True:
                    response = yield await flow.asend(response)
            except StopAsyncIteration:
                return
            finally:
                await flow.aclose()

    async with ExClient(base_url=iis.url) as client:
        first = await client.get("/", auth=NTLMAuth(USER, PASSWORD))
        assert first.status_code == 200
        assert calls == []
        wrapped = await client.get("/", auth=Wrapped(USER, PASSWORD))
        assert wrapped.status_code == 200
        assert wrapped.request.headers["X-Wrapped"] == "1"
        assert calls == ["Wrapped"]
        assert_pool_clean(client)


async def test_client_auth_partition_is_by_value_and_shows_no_digest(iis: IISLikeServer) -> None:
    # Two auth objects for one identity share its connections; another password does not.
    same, other = NTLMAuth(USER, PASSWORD), NTLMAuth(USER, "not-the-password")
    async with ExClient(base_url=iis.url) as client:
        first = await client.get("/", auth=NTLMAuth(USER, PASSWORD))
        again = await client.get("/", auth=same)
        refused = await client.get("/", auth=other)
        assert (first.status_code, again.status_code, refused.status_code) == (200, 200, 401)
        assert again.extensions["conn_id"] == first.extensions["conn_id"]
        assert refused.extensions["conn_id"] != first.extensions["conn_id"]
        assert len(iis.log) == 3 + 1 + 3  # the second request went with no handshake
        shown = repr(client.connections) + repr(same._partition)
        assert "alice" in shown
        assert same._partition.secret not in shown  # the password's digest
        assert_pool_clean(client)


@pytest.mark.parametrize("driven", [True, False])
async def test_client_driven_auth_body_error_closes_the_response(
    canned: CannedServer, driven: bool
) -> None:
    # The final response's body fails to arrive (the server stalls past the read timeout):
    # the error carries the request and the connection is closed, not left checked out.
    async with ExClient(base_url=canned.url, auth=_auth(driven)) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get("/stall", timeout=httpx.Timeout(5.0, read=0.3))
        assert info.value.request.url == canned.url + "/stall"
        assert_pool_clean(client)
