"""ExSyncClient's side of what the mutation run of ``_auth.py`` found untested: a streamed
body replayed on the last NTLM leg, and the sync driver closing the connection of a server
that fails Kerberos mutual authentication (against the suite's MIT KDC), as
tests/test_auth_legs.py and tests/test_kerberos.py check for ExClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from httpx_extensions import AuthenticationError, ExSyncClient, NegotiateAuth, NTLMAuth

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file
from .servers.kdc import LoopbackKDC
from .test_kerberos import kdc, localhost_url, user_file

__all__ = ["kdc", "user_file"]  # the fixtures, shared with test_kerberos


def test_auth_mut_sync_streamed_body_is_replayed_on_the_last_leg(tmp_path: Path) -> None:
    # The sync flow reads a streamed body into memory first: the type 1 leg goes without
    # it, and the type 3 leg sends it whole again (an iterator cannot be sent twice).
    def body() -> Iterator[bytes]:
        for _ in range(5):
            yield b"y" * 1000

    users = write_user_file(tmp_path / "users.txt", [("EXAMPLE", "alice", "Passw0rd")])
    with IISLikeServer(user_file=users, schemes=("NTLM",)) as server:
        with ExSyncClient() as client:
            response = client.post(
                server.url + "/upload", content=body(), auth=NTLMAuth("EXAMPLE\\alice", "Passw0rd")
            )
            assert response.status_code == 200
            assert response.json()["body_length"] == 5000
            assert_pool_clean(client)
        assert [(r.ntlm_message, r.status) for r in server.log] == [
            (None, 401),
            (1, 401),
            (3, 200),
        ]
        assert server.errors == []


@pytest.mark.parametrize("final_token", ["omit", "corrupt"])
def test_auth_mut_sync_mutual_auth_failure_closes_the_connection(
    kdc: LoopbackKDC, user_file: Path, final_token: str
) -> None:
    # The server thinks the connection is authenticated. Kept, it would serve the next
    # request of this identity without a handshake, so without any check of the server.
    with IISLikeServer(user_file=user_file, final_token=final_token) as server:
        auth = NegotiateAuth()
        with ExSyncClient() as client:
            for attempt in (1, 2):
                with pytest.raises(AuthenticationError, match="mutual authentication"):
                    client.get(localhost_url(server, f"/{attempt}"), auth=auth)
                assert server.connections_opened == attempt
                assert server.handshakes_completed == attempt
            assert_pool_clean(client)
        assert server.errors == []


def test_auth_mut_sync_preemptive_provider_error_sends_nothing(tmp_path: Path) -> None:
    # Kerberos only, and this suite's Kerberos reaches no KDC: the preemptive token cannot be
    # made. The sync hook raises before a byte is written (nor is an empty token sent).
    users = write_user_file(tmp_path / "users.txt", [("EXAMPLE", "alice", "Passw0rd")])
    with IISLikeServer(user_file=users) as server:
        with ExSyncClient() as client:
            with pytest.raises(AuthenticationError) as caught:
                client.get(server.url + "/", auth=NegotiateAuth(allow_ntlm=False, preemptive=True))
            assert_pool_clean(client)
        assert str(caught.value).startswith("Negotiate handshake with 127.0.0.1 failed: ")
        assert server.log == []
        assert server.errors == []
