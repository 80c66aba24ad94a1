"""Random interleavings of identities, pins, streamed bodies and responses, and cancellations,
through the real pool and the IIS-like server (one pyspnego acceptor per TCP connection).

Whatever the interleaving: every response that comes back is served as the identity that
sent it (an anonymous request gets the 401), and once every task is done nothing is left
checked out, reserved or queued. Examples are bounded and derandomised (a fixed seed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from httpx_extensions import CONN_ID, ExClient, NTLMAuth

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file

pytestmark = pytest.mark.anyio

USERS = [("EXAMPLE", "alice", "Passw0rd"), ("EXAMPLE", "bob", "hunter2"), ("", "zoë", "pässwörd")]
IDENTITIES: dict[str, tuple[str, str] | None] = {
    "EXAMPLE\\alice": ("EXAMPLE\\alice", "Passw0rd"),
    "EXAMPLE\\bob": ("EXAMPLE\\bob", "hunter2"),
    "zoë": ("zoë", "pässwörd"),
    "anonymous": None,
}


@dataclass(frozen=True)
class Op:
    identity: str
    pin: int | None  # index into the conn_ids seen so far
    body: str  # "none", "bytes" or "streamed"
    stream_response: bool
    cancel_after: float | None  # seconds; a cancellation that may land anywhere


ops = st.builds(
    Op,
    identity=st.sampled_from(list(IDENTITIES)),
    pin=st.none() | st.integers(0, 7),
    body=st.sampled_from(["none", "bytes", "streamed"]),
    stream_response=st.booleans(),
    cancel_after=st.none() | st.sampled_from([0.0, 0.001, 0.004]),
)


@pytest.fixture(scope="module")
def iis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IISLikeServer]:
    user_file: Path = write_user_file(tmp_path_factory.mktemp("fuzz") / "users.txt", USERS)
    with IISLikeServer(user_file=user_file) as server:
        yield server


async def _streamed_body() -> AsyncIterator[bytes]:
    for _ in range(4):
        yield b"z" * 2048


async def run_op(
    client: ExClient, url: str, op: Op, auths: dict[str, NTLMAuth | None], seen: list[int]
) -> httpx.Response | None:
    extensions = {}
    if op.pin is not None and seen:
        extensions[CONN_ID] = seen[op.pin % len(seen)]
    content: bytes | AsyncIterator[bytes] | None = None
    method = "GET"
    if op.body == "bytes":
        method, content = "POST", b"y" * 5000
    elif op.body == "streamed":
        method, content = "POST", _streamed_body()
    request = client.build_request(method, url, content=content, extensions=extensions)
    auth = auths[op.identity]
    response: httpx.Response | None = None
    with anyio.CancelScope() as scope:
        if op.cancel_after is not None:
            scope.deadline = anyio.current_time() + op.cancel_after
        if op.stream_response:
            response = await client.send(request, auth=auth, stream=True)
            try:
                await response.aread()
            finally:
                await response.aclose()
        else:
            response = await client.send(request, auth=auth)
    if scope.cancelled_caught:
        return None
    assert response is not None
    seen.append(response.extensions[CONN_ID])
    return response


@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(ops, min_size=1, max_size=12),
    max_connections=st.integers(1, 4),
)
async def test_auth_fuzz_through_the_pool_serves_each_request_as_its_identity(
    iis: IISLikeServer, batch: list[Op], max_connections: int
) -> None:
    auths = {
        name: None if creds is None else NTLMAuth(*creds) for name, creds in IDENTITIES.items()
    }
    results: list[tuple[Op, httpx.Response | None]] = []
    seen: list[int] = []
    limits = httpx.Limits(max_connections=max_connections)
    async with ExClient(limits=limits, timeout=httpx.Timeout(30)) as client:

        async def one(op: Op) -> None:
            results.append((op, await run_op(client, iis.url + "/upload", op, auths, seen)))

        async with anyio.create_task_group() as tg:
            for op in batch:
                tg.start_soon(one, op)
        assert_pool_clean(client)
        assert client._transport.pool.waiting == 0
        assert len(client.connections) <= max_connections
        # The pool still works for everyone after whatever happened.
        after = await client.get(iis.url + "/", auth=auths["EXAMPLE\\bob"])
        assert after.json()["user"] == "EXAMPLE\\bob"
        assert_pool_clean(client)
    assert len(results) == len(batch)
    for op, response in results:
        if response is None:
            continue  # cancelled
        if op.identity == "anonymous":
            assert response.status_code == 401, op
        else:
            assert response.status_code == 200, op
            payload = response.json()
            assert payload["user"] == op.identity, op
            expected_length = {"none": 0, "bytes": 5000, "streamed": 8192}[op.body]
            assert payload["body_length"] == expected_length, op
