"""What each handshake leg carries: the NTLM type 1 leg, which the server answers with 401
whatever it holds, goes out without the body (``Content-Length: 0``, no
``Transfer-Encoding``), and the type 3 leg carries the whole body again, for a body of known
length and a streamed one. Seen with a request hook on ExClient against the IIS-like server
on loopback (httpx runs the hook for every request an auth flow sends)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from httpx_extensions import ExClient, NTLMAuth

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file
from .servers.ntlm import ntlm_message_type

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")
Leg = tuple[int | None, str | None, str | None, int]


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(
        tmp_path_factory.mktemp("legs") / "users.txt", [("EXAMPLE", "alice", "Passw0rd")]
    )


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as server:
        yield server
    assert server.errors == []


def _recorder(legs: list[Leg]) -> Callable[[httpx.Request], Awaitable[None]]:
    async def hook(request: httpx.Request) -> None:
        value = request.headers.get("Authorization")
        kind = ntlm_message_type(base64.b64decode(value.partition(" ")[2])) if value else None
        legs.append(
            (
                kind,
                request.headers.get("Content-Length"),
                request.headers.get("Transfer-Encoding"),
                len(await request.aread()),
            )
        )

    return hook


async def test_auth_type1_leg_drops_a_body_of_known_length(iis: IISLikeServer) -> None:
    legs: list[Leg] = []
    body = b"x" * 5000
    async with ExClient(event_hooks={"request": [_recorder(legs)]}) as client:
        response = await client.post(iis.url + "/upload", content=body, auth=NTLMAuth(*ALICE))
        assert response.status_code == 200
        assert response.json()["body_length"] == len(body)
        assert_pool_clean(client)
    assert legs == [(None, "5000", None, 5000), (1, "0", None, 0), (3, "5000", None, 5000)]


async def test_auth_type1_leg_drops_a_streamed_body(iis: IISLikeServer) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 1000

    legs: list[Leg] = []
    async with ExClient(event_hooks={"request": [_recorder(legs)]}) as client:
        response = await client.post(iis.url + "/upload", content=body(), auth=NTLMAuth(*ALICE))
        assert response.status_code == 200
        assert response.json()["body_length"] == 5000
        assert_pool_clean(client)
    assert legs == [(None, None, "chunked", 5000), (1, "0", None, 0), (3, None, "chunked", 5000)]


async def test_auth_bodiless_request_legs_are_the_request_itself(iis: IISLikeServer) -> None:
    legs: list[Leg] = []
    async with ExClient(event_hooks={"request": [_recorder(legs)]}) as client:
        response = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert response.status_code == 200
        assert response.request.headers["Authorization"].startswith("NTLM ")
        assert_pool_clean(client)
    assert legs == [(None, None, None, 0), (1, None, None, 0), (3, None, None, 0)]
