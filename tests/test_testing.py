"""The public test helpers (``httpx_extensions.testing``): their face, and using them the way
a user of the library would, to test their own client code. The server's protocol
behaviour is pinned in tests/test_ntlm_server.py."""

from __future__ import annotations

import inspect
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trustme

import httpx_extensions.testing
from httpx_extensions import ExClient, NegotiateAuth, NTLMAuth
from httpx_extensions.testing import (
    IISLikeServer,
    NTLMRequestRecord,
    channel_bindings_for,
    write_user_file,
)

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")


def test_testing_exports_are_sorted_complete_and_documented() -> None:
    module = httpx_extensions.testing
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert set(module.__all__) == public
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        doc = inspect.getdoc(getattr(module, name)) or ""
        assert len(doc.splitlines()) > 1, f"{name} needs a docstring"
        if inspect.isfunction(getattr(module, name)):
            assert "Args:" in doc, name
            assert "Returns:" in doc, name
    server_doc = inspect.getdoc(IISLikeServer) or ""
    for section in ("Args:", "Raises:"):
        assert section in server_doc
    assert "Attributes:" in (inspect.getdoc(NTLMRequestRecord) or "")
    for method in ("start", "stop", "reset", "connection_users"):
        assert inspect.getdoc(getattr(IISLikeServer, method)), method


def test_testing_tests_servers_re_export_the_same_objects() -> None:
    from tests import servers
    from tests.servers import ntlm

    for name in httpx_extensions.testing.__all__:
        assert getattr(ntlm, name) is getattr(httpx_extensions.testing, name)
    assert servers.IISLikeServer is IISLikeServer
    assert servers.write_user_file is write_user_file


def test_testing_imports_nothing_beyond_the_library() -> None:
    code = (
        "import sys, httpx_extensions.testing\n"
        "extra = {'trustme', 'pytest', 'tests'} & set(sys.modules)\n"
        "print(sorted(extra))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "[]"


async def test_testing_a_users_client_code_against_the_server(tmp_path: Path) -> None:
    users = write_user_file(str(tmp_path / "users.txt"), [("EXAMPLE", "alice", "Passw0rd")])
    assert isinstance(users, Path)
    with IISLikeServer(user_file=str(users)) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        async with ExClient(auth=NTLMAuth(*ALICE)) as client:
            first = await client.get(server.url + "/data?x=1")
            second = await client.get(server.url + "/data")
        assert first.json() == {
            "user": "EXAMPLE\\alice",
            "conn": 1,
            "path": "/data?x=1",
            "method": "GET",
            "body_length": 0,
            "handshake": True,
            "scheme": "NTLM",
        }
        assert second.json()["handshake"] is False
        assert first.headers["X-Conn-Seq"] == second.headers["X-Conn-Seq"] == "1"
        assert (server.handshakes_completed, server.connections_opened) == (1, 1)
        assert server.requests_total == 4  # anonymous 401, challenge, 200, then one 200
        assert server.connection_users() == {1: "EXAMPLE\\alice"}
        log = server.log
        assert [(r.status, r.handshake, r.mechanism) for r in log] == [
            (401, False, None),
            (401, False, None),
            (200, True, "ntlm"),
            (200, False, "ntlm"),
        ]
        assert [r.ntlm_message for r in log] == [None, 1, 3, None]
        server.reset()
        assert (server.requests_total, server.log) == (0, [])
    assert server.errors == []


async def test_testing_https_with_a_users_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    users = write_user_file(tmp_path / "users.txt", [("EXAMPLE", "alice", "Passw0rd")])
    with IISLikeServer(
        user_file=users,
        ssl_context=server_context,
        schemes=("NTLM",),
        require_channel_binding=True,
    ) as server:
        assert server.scheme == "https"
        assert server.certificate_der is not None
        assert server.channel_bindings == channel_bindings_for(server.certificate_der)
        async with ExClient(verify=client_context) as client:
            bound = await client.get(server.url, auth=NTLMAuth(*ALICE))
        async with ExClient(verify=client_context) as client:
            unbound = await client.get(server.url, auth=NTLMAuth(*ALICE, channel_binding=False))
        assert (bound.status_code, unbound.status_code) == (200, 401)
        type3 = [r.channel_binding for r in server.log if r.ntlm_message == 3]
        assert type3 == ["match", "none"]


async def test_testing_per_request_mode_and_negotiate(tmp_path: Path) -> None:
    users = write_user_file(tmp_path / "users.txt", [("EXAMPLE", "alice", "Passw0rd")])
    with IISLikeServer(user_file=users, auth_per_request=True) as server:
        async with ExClient(auth=NegotiateAuth(*ALICE)) as client:
            responses = [await client.get(server.url) for _ in range(3)]
        assert [r.json()["handshake"] for r in responses] == [True, True, True]
        assert server.handshakes_completed == 3
        assert server.connection_users() == {1: None}


def test_testing_a_server_starts_once(tmp_path: Path) -> None:
    users = write_user_file(tmp_path / "users.txt", [("", "bob", "pw")])
    server = IISLikeServer(user_file=users)
    with server, pytest.raises(RuntimeError, match="can only be started once"):
        server.start()
    server.stop()  # idempotent
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get(server.url)
    # It let go of NTLM_USER_FILE, so a server with another user file may start.
    other = write_user_file(tmp_path / "other.txt", [("", "carol", "pw")])
    with IISLikeServer(user_file=other) as third:
        assert third.port != server.port
