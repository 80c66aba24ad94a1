"""NTLMAuth and NegotiateAuth against the IIS-like server (one pyspnego acceptor per TCP
connection), under asyncio and trio."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from httpx_extensions import (
    CONN_ID,
    AuthenticationError,
    ExClient,
    HTTPXExtensionsError,
    NegotiateAuth,
    NTLMAuth,
)

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file

pytestmark = pytest.mark.anyio

USERS = [("EXAMPLE", "alice", "Passw0rd"), ("EXAMPLE", "bob", "hunter2"), ("", "zoë", "pässwörd")]
ALICE = ("EXAMPLE\\alice", "Passw0rd")
BOB = ("EXAMPLE\\bob", "hunter2")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(tmp_path_factory.mktemp("auth") / "users.txt", USERS, store_hashes=True)


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file) as server:
        yield server


@pytest.fixture
def iis_per_request(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file, auth_per_request=True) as server:
        yield server


@pytest.fixture
def iis_https(user_file: Path, ca: trustme.CA) -> Iterator[IISLikeServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with IISLikeServer(
        user_file=user_file, ssl_context=context, require_channel_binding=True
    ) as server:
        yield server


async def run_many(n: int, concurrency: int, fn) -> list:  # type: ignore[no-untyped-def]
    results: list = []
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            results.append(await fn())

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return results


async def test_auth_ntlm_2000_requests_one_round_trip_each_once_warm(iis: IISLikeServer) -> None:
    auth = NTLMAuth(*ALICE)
    async with ExClient(limits=httpx.Limits(max_connections=10), timeout=30) as client:
        responses = await run_many(2000, 50, lambda: client.get(iis.url + "/data", auth=auth))
        assert [r.status_code for r in responses] == [200] * 2000
        assert {r.json()["user"] for r in responses} == {"EXAMPLE\\alice"}
        assert iis.max_open_connections <= 10
        assert iis.requests_total / 2000 <= 1.05, iis.requests_total
        assert iis.handshakes_completed == iis.connections_opened
        assert_pool_clean(client)


async def test_auth_ntlm_server_that_challenges_every_request(
    iis_per_request: IISLikeServer,
) -> None:
    auth = NTLMAuth(*ALICE)
    async with ExClient(limits=httpx.Limits(max_connections=10), timeout=30) as client:
        responses = await run_many(
            300, 20, lambda: client.get(iis_per_request.url + "/", auth=auth)
        )
        assert [r.status_code for r in responses] == [200] * 300
        # Learnt after the first re-challenge: two exchanges per request, not three.
        assert iis_per_request.requests_total <= 2 * 300 + 3 * 20
        assert_pool_clean(client)


async def test_auth_non_ascii_user(iis: IISLikeServer) -> None:
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=NTLMAuth("zoë", "pässwörd"))
        assert response.status_code == 200
        assert response.json()["user"] == "zoë"


async def test_auth_wrong_password_returns_the_401_once(iis: IISLikeServer) -> None:
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=NTLMAuth("EXAMPLE\\alice", "wrong"))
        assert response.status_code == 401
        assert iis.requests_total == 3  # anonymous, type 1, type 3: no retry loop
        assert_pool_clean(client)


async def test_auth_identities_never_share_a_connection(iis: IISLikeServer) -> None:
    alice, bob = NTLMAuth(*ALICE), NTLMAuth(*BOB)
    async with ExClient(limits=httpx.Limits(max_connections=4), timeout=30) as client:

        async def one(i: int) -> tuple[str | None, httpx.Response]:
            if i % 3 == 0:
                return "EXAMPLE\\alice", await client.get(iis.url + "/", auth=alice)
            if i % 3 == 1:
                return "EXAMPLE\\bob", await client.get(iis.url + "/", auth=bob)
            return None, await client.get(iis.url + "/")

        counter = iter(range(300))
        results = await run_many(300, 30, lambda: one(next(counter)))
    for user, response in results:
        if user is None:
            assert response.status_code == 401  # never an authenticated connection
        else:
            assert response.status_code == 200
            assert response.json()["user"] == user


async def test_auth_post_body_through_the_handshake(iis: IISLikeServer) -> None:
    body = b"x" * 100_000
    async with ExClient() as client:
        response = await client.post(iis.url + "/upload", content=body, auth=NTLMAuth(*ALICE))
        assert response.status_code == 200
        assert response.json()["body_length"] == len(body)
        # The type 1 leg, which the server always answers with 401, carried no body.
        type1 = [r for r in iis.log if r.ntlm_message == 1]
        assert len(type1) == 1


async def test_auth_streamed_body_is_replayed_on_the_final_leg(iis: IISLikeServer) -> None:
    async def body():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"y" * 1000

    async with ExClient() as client:
        response = await client.post(iis.url + "/upload", content=body(), auth=NTLMAuth(*ALICE))
        assert response.status_code == 200
        assert response.json()["body_length"] == 10_000


async def test_auth_negotiate_falls_back_to_ntlm(iis: IISLikeServer) -> None:
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=NegotiateAuth(*ALICE))
        assert response.status_code == 200
        assert response.json()["scheme"].lower() == "negotiate"


async def test_auth_negotiate_can_refuse_ntlm(user_file: Path) -> None:
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as iis:
        async with ExClient() as client:
            response = await client.get(iis.url + "/", auth=NegotiateAuth(*ALICE, allow_ntlm=False))
            assert response.status_code == 401  # NTLM offered, NTLM refused: the 401 stands
            assert iis.requests_total == 1


async def test_auth_channel_binding_on_https(
    iis_https: IISLikeServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    async with ExClient(verify=client_ssl_context) as client:
        bound = await client.get(iis_https.url + "/", auth=NTLMAuth(*ALICE))
        assert bound.status_code == 200
        unbound = await client.get(iis_https.url + "/", auth=NTLMAuth(*BOB, channel_binding=False))
        assert unbound.status_code == 401  # the server requires the binding


async def test_auth_server_closing_between_legs(iis: IISLikeServer) -> None:
    """Either the close is seen before the last leg goes out (the pin cannot be honoured; the
    handshake starts over once on the new connection, the server closes that one too, and the
    split is reported by name), or the leg meets the closed socket (a transport error). Never
    a login that seems to succeed."""
    async with ExClient() as client:
        for _ in range(5):
            try:
                await client.get(iis.url + "/close-after-challenge", auth=NTLMAuth(*ALICE))
            except AuthenticationError as exc:
                assert "NTLM handshake" in str(exc)
                assert "was split" in str(exc)
                assert isinstance(exc, httpx.HTTPError)
                assert isinstance(exc, HTTPXExtensionsError)
            except httpx.TransportError:
                pass
            else:
                pytest.fail("a handshake split by the server went unnoticed")
            assert_pool_clean(client)
        assert all(r.status != 200 for r in iis.log)


async def test_auth_cancel_mid_handshake_leaves_nothing_reserved(iis: IISLikeServer) -> None:
    async with ExClient(limits=httpx.Limits(max_connections=1)) as client:
        for delay in (0.001, 0.003, 0.006):
            with anyio.move_on_after(delay):
                await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
            assert_pool_clean(client)
        response = await client.get(
            iis.url + "/", auth=NTLMAuth(*ALICE), timeout=httpx.Timeout(5, pool=1)
        )
        assert response.status_code == 200


async def test_auth_never_logs_tokens_or_passwords(
    iis: IISLikeServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):  # everything, pyspnego's logger included
        async with ExClient() as client:
            await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
    text = caplog.text
    assert "NTLM leg" in text
    assert "Passw0rd" not in text
    assert "TlRMTVNT" not in text  # base64 of "NTLMSS", the start of every NTLM token
    assert "Passw0rd" not in repr(NTLMAuth(*ALICE))


async def test_auth_pins_each_leg_to_the_challenged_connection(iis: IISLikeServer) -> None:
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        conns = {r.extensions[CONN_ID] for r in (*response.history, response)}
        assert len(conns) == 1
        assert len({r.conn_seq for r in iis.log}) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_auth_bad_arguments() -> None:
    with pytest.raises(TypeError, match="two strings"):
        NTLMAuth("alice", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without a username"):
        NegotiateAuth(password="secret")
    with pytest.raises(ValueError, match="must not be empty"):
        NTLMAuth(" ", "secret")


# Malformed challenges: whatever the server sends, the result is a response or an
# AuthenticationError, never another exception.

_challenges = st.one_of(
    st.binary(max_size=300).map(lambda b: "NTLM " + __import__("base64").b64encode(b).decode()),
    st.text(max_size=60).map(lambda t: "NTLM " + t),
    st.binary(min_size=32, max_size=200).map(
        lambda b: (
            "NTLM " + __import__("base64").b64encode(b"NTLMSSP\x00\x02\x00\x00\x00" + b).decode()
        )
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(challenge=_challenges)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_auth_fuzzed_challenges(challenge: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        header = request.headers.get("Authorization", "")
        if not header:
            return httpx.Response(401, headers={"WWW-Authenticate": "NTLM"})
        if header.startswith("NTLM TlRMTVNTUAAB"):  # type 1
            try:
                return httpx.Response(401, headers={"WWW-Authenticate": challenge})
            except Exception:
                return httpx.Response(401, headers={"WWW-Authenticate": "NTLM"})
        return httpx.Response(200)

    async with ExClient(transport=httpx.MockTransport(handler)) as client:
        outcome: BaseException | httpx.Response
        try:
            outcome = await client.get("http://iis.test/", auth=NTLMAuth(*ALICE))
        except AuthenticationError as exc:
            outcome = exc
        if isinstance(outcome, httpx.Response):
            assert outcome.status_code in (200, 401)
        else:
            assert "NTLM" in str(outcome)


async def test_auth_current_user_from_ntlm_user_file(user_file: Path) -> None:
    """No credentials given: pyspnego takes the current user's from NTLM_USER_FILE (set here by
    the server fixture, which reads the same file)."""
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as iis:
        async with ExClient() as client:
            response = await client.get(iis.url + "/", auth=NegotiateAuth())
            assert response.status_code == 200
            assert response.json()["user"] == "EXAMPLE\\alice"  # the file's first entry


async def test_auth_cookie_set_by_a_challenge_goes_with_the_next_leg(user_file: Path) -> None:
    # IIS ARR / F5 cookie affinity: each 401 sets the cookie of the server holding the
    # handshake, and the next leg must send it back. httpx builds the Cookie header once per
    # request, so without the auth carrying it over every handshake would be refused.
    auth = NTLMAuth(*ALICE)
    with IISLikeServer(user_file=user_file, affinity_cookie="ARRAffinity") as srv:
        async with ExClient(limits=httpx.Limits(max_connections=5), timeout=30) as client:
            responses = await run_many(100, 20, lambda: client.get(srv.url, auth=auth))
            assert_pool_clean(client)
        assert [r.status_code for r in responses] == [200] * 100
        assert [r.error for r in srv.log if r.error] == []
        assert srv.handshakes_completed == srv.connections_opened <= 5
