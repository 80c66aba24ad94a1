"""httpcore's DEBUG trace, for routes httpcore serves (``mounts=``), shows no auth value.

``_redact.py`` filters the ``httpcore.http11`` and ``httpcore.proxy`` loggers from the package
import on; tests/test_imports.py checks that in a fresh interpreter, these in this one.
"""

from __future__ import annotations

import importlib
import logging

import httpx
import pytest

from httpx_extensions import ExClient, _redact

from .servers import LoopbackServer

pytestmark = pytest.mark.anyio


async def test_cov_redact_httpcore_trace_of_a_mounted_route_blanks_auth_values(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="httpcore")
    mounts = {server.url: httpx.AsyncHTTPTransport()}  # served by httpcore, not our pool
    async with ExClient(mounts=mounts) as client:
        # The first leg of the server's handshake: its 401 carries a per-connection nonce.
        response = await client.get(
            server.url + "/auth", headers={"Authorization": "Nonce init user=alice"}
        )
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    nonce = challenge.split(" ", 1)[1]
    assert len(nonce) == 32
    trace = [r.getMessage() for r in caplog.records if r.name == "httpcore.http11"]
    (head,) = [m for m in trace if m.startswith("receive_response_headers.complete")]
    assert "(b'WWW-Authenticate', b'<redacted>')" in head
    assert "(b'X-Conn-Seq', b'1')" in head  # other headers as they were
    assert all(nonce not in message for message in trace)
    # Records without an auth header go through unchanged.
    assert "receive_response_body.started request=<Request [b'GET']>" in trace


def test_cov_redact_filter_leaves_non_text_messages_alone() -> None:
    (installed,) = [
        f
        for f in logging.getLogger("httpcore.http11").filters
        if type(f).__name__ == "_RedactAuthHeaders"
    ]
    payload = {"Authorization": "kept as the caller logged it"}
    record = logging.LogRecord("httpcore.http11", logging.DEBUG, "x.py", 1, payload, None, None)
    assert installed.filter(record) is True
    assert record.msg is payload


def test_cov_redact_reloaded_module_installs_no_second_filter() -> None:
    def ours(name: str) -> int:
        return sum(
            type(f).__name__ == "_RedactAuthHeaders" for f in logging.getLogger(name).filters
        )

    assert ours("httpcore.http11") == ours("httpcore.proxy") == 1
    importlib.reload(_redact)
    assert ours("httpcore.http11") == ours("httpcore.proxy") == 1
