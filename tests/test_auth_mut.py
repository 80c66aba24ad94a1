"""Behaviour that the mutation run of ``_auth.py`` (``scripts/mutate auth``) found untested:
the edges of the SPNEGO negState reader, the identity a connection shows in
``client.connections`` (never the password digest), and the handshake trace of a
``preemptive=True`` request. Against the IIS-like server on loopback where a handshake runs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from httpx_extensions import ExClient, NTLMAuth
from httpx_extensions._auth import _AUTH_TRACE, _spnego_neg_state

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_user_file(
        tmp_path_factory.mktemp("mut") / "users.txt", [("EXAMPLE", "alice", "Passw0rd")]
    )


@pytest.fixture
def iis(user_file: Path) -> Iterator[IISLikeServer]:
    with IISLikeServer(user_file=user_file, schemes=("NTLM",)) as server:
        yield server
    assert server.errors == []


# -- the negState reader ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "state"),
    [
        # A reject with its two outer lengths in the 4-octet long form (BER, not DER's
        # minimal form, but the reader takes 1-4 length octets): still a reject.
        (bytes.fromhex("a1840000000b308400000005a0030a0102"), 2),
        # Five length octets (a length past 4 GiB, which no header carries) are more than
        # the reader takes: not taken for a reject; pyspnego's parser has the last word.
        (bytes.fromhex("a18500000000073005a0030a0102"), None),
    ],
    ids=["four-length-octets", "five-length-octets"],
)
def test_auth_mut_neg_state_long_form_lengths(token: bytes, state: int | None) -> None:
    assert _spnego_neg_state(token) == state


# -- what a connection shows -----------------------------------------------------------------


async def test_auth_mut_connections_show_the_user_never_the_password_digest(
    iis: IISLikeServer,
) -> None:
    # The partition of an authenticated connection is in client.connections, which an
    # application may log: it names the user, and its repr hides the digest that keeps two
    # passwords of one user apart.
    digest = hashlib.sha256(ALICE[1].encode()).hexdigest()[:16]
    async with ExClient() as client:
        response = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert response.status_code == 200
        (info,) = client.connections
        assert info.partition.secret == digest  # type: ignore[attr-defined]
        shown = repr(client.connections)
        assert "alice" in shown
        assert digest not in shown
        assert_pool_clean(client)


# -- the trace of a preemptive request --------------------------------------------------------


async def test_auth_mut_preemptive_option_trace(iis: IISLikeServer) -> None:
    # preemptive=True on a new connection: the choice and the context are recorded when the
    # first token is made (by the transport's hook), then the two exchanges.
    trace: list[dict[str, object]] = []
    async with ExClient() as client:
        response = await client.get(
            iis.url + "/", auth=NTLMAuth(*ALICE, preemptive=True), extensions={_AUTH_TRACE: trace}
        )
        assert response.status_code == 200
        assert_pool_clean(client)
    assert [(r.ntlm_message, r.status) for r in iis.log] == [(1, 401), (3, 200)]
    assert [record["event"] for record in trace] == [
        "choice",
        "context",
        "exchange",
        "exchange",
        "done",
    ]
    assert trace[0] == {"event": "choice", "scheme": "NTLM", "preemptive": True}
    assert trace[1] == {
        "event": "context",
        "protocol": "ntlm",
        "spn": "HTTP/127.0.0.1",
        "channel_binding": False,
    }
    first, second = trace[2], trace[3]
    assert (first["status"], second["status"]) == (401, 200)
    assert first["scheme"] == second["scheme"] == "NTLM"
    # Sizes as the server saw the tokens: the type 1, then the type 3.
    assert (first["sent_bytes"], second["sent_bytes"]) == tuple(r.token_length for r in iis.log)
    assert first["received_bytes"] != 0  # the type 2 challenge
    assert second["received_bytes"] == 0  # NTLM's 200 carries no token
    assert first["conn_id"] == second["conn_id"] == response.extensions["conn_id"]
    assert trace[4] == {"event": "done", "complete": True, "mechanism": "ntlm"}
