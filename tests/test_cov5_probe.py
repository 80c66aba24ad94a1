"""``httpx-extensions probe``'s verdicts that a live probe against the loopback servers does not
meet on its own (issue 14 item 5): the persistence check's second request failing or landing
on another connection, and the reason given when a Kerberos token could be made although the
handshake used something else.

The first request is the probe's own (``run_probe`` against the IIS-like server); the second
is ``_persistence`` after the connection, or the server, has gone. The reason comes from
``_explain_mechanism`` with a ticket from a loopback KDC.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from httpx_extensions import ExClient
from httpx_extensions._cli._probe import (
    ProbeReport,
    ProbeSettings,
    _auth,
    _explain_mechanism,
    _persistence,
    run_probe,
)
from httpx_extensions.testing import IISLikeServer, write_user_file

from .servers.kdc import LoopbackKDC, kerberos_unavailable
from .test_cli import ALICE, PASSWORD, USERS

pytestmark = pytest.mark.anyio


@pytest.fixture
def iis(tmp_path: Path) -> Iterator[IISLikeServer]:
    users = write_user_file(tmp_path / "users.txt", USERS, store_hashes=True)
    with IISLikeServer(user_file=users) as server:
        yield server
    assert server.errors == []


def _settings(url: str, user: str | None = ALICE) -> ProbeSettings:
    return ProbeSettings(
        url=url,
        user=user,
        password=PASSWORD if user is not None else None,
        password_source="a test",
        force=None,
        spn_host=None,
        channel_binding=True,
        verify=True,
        proxy=None,
        timeout=10.0,
    )


async def _probed(iis: IISLikeServer) -> tuple[ProbeSettings, ProbeReport]:
    settings = _settings(iis.url + "/")
    report = await run_probe(settings)  # its client, and the connection, are closed after
    assert report.ok
    assert report.persistence is not None
    assert report.persistence.verdict == "persistent"
    return settings, report


async def test_cov5_probe_second_request_on_another_connection_is_unknown(
    iis: IISLikeServer,
) -> None:
    settings, report = await _probed(iis)
    ended_on = report.legs[-1].conn_id
    async with ExClient() as client:
        persistence = await _persistence(client, _auth(settings), settings, report)
    assert persistence.verdict == "unknown"
    assert persistence.detail.startswith(
        f"the server closed connection {ended_on} after the first request (the second went "
        "out on connection "
    )
    assert persistence.conn_id not in (None, ended_on)
    assert persistence.status == 401  # the new connection is not authenticated
    assert persistence.round_trips == 3  # so it took a whole handshake


async def test_cov5_probe_second_request_that_fails_is_unknown(iis: IISLikeServer) -> None:
    settings, report = await _probed(iis)
    iis.stop()  # the server goes away between the two requests
    async with ExClient() as client:
        persistence = await _persistence(client, _auth(settings), settings, report)
    assert persistence.verdict == "unknown"
    assert persistence.detail.startswith("the second request failed: ConnectError: ")


async def test_cov5_probe_kerberos_token_possible_but_the_handshake_used_ntlm() -> None:
    reason = kerberos_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with LoopbackKDC(realm="PROBE.TEST", users={"dave": "D4ve-pw"}) as kdc:
        kdc.kinit("dave")
        # What a Windows server that negotiates down to NTLM shows (its SPN registered to
        # another account, say): Negotiate offered, NTLM used, a ticket for HTTP/localhost.
        report = ProbeReport(
            url="http://localhost/",
            credentials="the current user",
            offered=["Negotiate", "NTLM"],
            scheme="Negotiate",
            mechanism="ntlm",
        )
        await _explain_mechanism(report, _settings("http://localhost/", user=None))
    assert report.kerberos_error is None
    assert report.reason == (
        "a Kerberos token for HTTP/localhost could be made, but the handshake used ntlm"
    )
