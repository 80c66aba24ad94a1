"""Kerberos paths of ``_auth.py`` that the mutation run (``scripts/mutate auth``) found
untested, against the suite's MIT KDC and the IIS-like server (tests/test_kerberos.py's
fixtures): a preemptive token the server refuses, then the ordinary handshake refused too."""

from __future__ import annotations

import ssl

import pytest

from httpx_extensions import ExClient, NegotiateAuth

from .conftest import assert_pool_clean
from .servers import IISLikeServer
from .test_kerberos import iis_https, kdc, localhost_url, user_file

__all__ = ["iis_https", "kdc", "user_file"]  # the fixtures, shared with test_kerberos

pytestmark = pytest.mark.anyio


async def test_auth_mut_kerberos_refused_preemptive_then_refused_handshake_returns_the_401(
    iis_https: IISLikeServer, client_ssl_context: ssl.SSLContext
) -> None:
    # Extended Protection required, and a client that sends no channel binding: the server
    # refuses the preemptive AP-REQ with fresh offers; the ordinary handshake then runs once
    # on that connection, is refused the same way, and its 401 is the answer (no third try).
    auth = NegotiateAuth(preemptive=True, channel_binding=False)
    async with ExClient(verify=client_ssl_context) as client:
        response = await client.get(localhost_url(iis_https), auth=auth)
        assert response.status_code == 401
        assert_pool_clean(client)
    assert [(r.conn_seq, r.scheme, r.status) for r in iis_https.log] == [
        (1, "Negotiate", 401),
        (1, "Negotiate", 401),
    ]
    assert iis_https.errors == []
