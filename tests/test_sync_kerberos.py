"""Kerberos (Negotiate) on ExSyncClient against the suite's MIT KDC: the sync driver runs the
provider steps inline, in the calling thread; under threads, each flow keeps its own context."""

from __future__ import annotations

import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from httpx_extensions import AuthenticationError, ExSyncClient, NegotiateAuth

from .servers import IISLikeServer
from .test_kerberos import (
    ALICE,
    assert_kerberos,
    iis,
    iis_https,
    kdc,
    localhost_url,
    no_ccache,
    user_file,
)
from .test_sync_client import assert_pool_clean

__all__ = [
    "iis",
    "iis_https",
    "kdc",
    "no_ccache",
    "user_file",
]  # the fixtures, shared with test_kerberos


def test_sync_kerberos_single_sign_on_from_the_ccache(iis: IISLikeServer) -> None:
    with ExSyncClient() as client:
        response = client.get(localhost_url(iis, "/sso"), auth=NegotiateAuth())
        assert response.status_code == 200
        body = response.json()
        assert (body["user"], body["scheme"], body["handshake"]) == (ALICE, "Negotiate", True)
        assert [(r.scheme, r.status) for r in iis.log] == [(None, 401), ("Negotiate", 200)]
        again = client.get(localhost_url(iis, "/again"), auth=NegotiateAuth())
        assert again.json()["handshake"] is False
        assert_kerberos(iis)
        assert_pool_clean(client)


def test_sync_kerberos_from_16_threads_one_handshake_per_connection(iis: IISLikeServer) -> None:
    auth = NegotiateAuth(allow_ntlm=False)
    with ExSyncClient(limits=httpx.Limits(max_connections=4), timeout=30) as client:
        with ThreadPoolExecutor(16) as pool:
            responses = list(
                pool.map(lambda _: client.get(localhost_url(iis, "/data"), auth=auth), range(300))
            )
        assert [r.status_code for r in responses] == [200] * 300
        assert {r.json()["user"] for r in responses} == {ALICE}
        assert iis.max_open_connections <= 4
        assert_kerberos(iis, handshakes=iis.connections_opened)
        assert_pool_clean(client)


def test_sync_kerberos_channel_binding_over_https(
    iis_https: IISLikeServer, client_ssl_context: ssl.SSLContext
) -> None:
    with ExSyncClient(verify=client_ssl_context) as client:
        response = client.get(localhost_url(iis_https, "/bound"), auth=NegotiateAuth())
        assert response.status_code == 200
        assert response.json()["user"] == ALICE
        assert_kerberos(iis_https)
        assert_pool_clean(client)


def test_sync_kerberos_preemptive_one_round_trip_on_a_new_connection(iis: IISLikeServer) -> None:
    auth = NegotiateAuth(preemptive=True)
    with ExSyncClient() as client:
        first = client.get(localhost_url(iis, "/one"), auth=auth)
        assert first.status_code == 200
        assert first.json()["handshake"] is True
        # The AP-REQ went with the first request (made by the sync hook): no anonymous 401.
        assert [(r.scheme, r.status) for r in iis.log] == [("Negotiate", 200)]
        second = client.get(localhost_url(iis, "/two"), auth=auth)
        assert second.json()["handshake"] is False
        assert_kerberos(iis)
        assert_pool_clean(client)


def test_sync_kerberos_wrong_password_is_an_authentication_error(
    iis: IISLikeServer, no_ccache: Path
) -> None:
    auth = NegotiateAuth(ALICE, "wrong", allow_ntlm=False)
    with ExSyncClient() as client:
        with pytest.raises(AuthenticationError, match="kerberos") as info:
            client.get(localhost_url(iis), auth=auth)
        assert "Preauthentication failed" in str(info.value)
        assert [(r.scheme, r.status) for r in iis.log] == [(None, 401)]
        assert_pool_clean(client)
