"""Proxies on ExSyncClient: forward proxying and CONNECT tunnels, Basic credentials in the
proxy URL, and NTLM to an authenticating proxy (AuthProxy) from threads."""

from __future__ import annotations

import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from httpx_extensions import CONN_ID, ExSyncClient, NTLMAuth
from httpx_extensions.testing import AuthProxy, IISLikeServer

from .servers import LoopbackProxy, LoopbackServer
from .test_proxy_auth import ALICE, BOB, ntlm_proxy, origin, tls_origin, user_file
from .test_sync_client import assert_pool_clean

__all__ = ["ntlm_proxy", "origin", "tls_origin", "user_file"]  # fixtures of test_proxy_auth


def test_sync_proxy_forward_and_tunnel(
    server: LoopbackServer,
    https_server: LoopbackServer,
    proxy: LoopbackProxy,
    client_ssl_context: ssl.SSLContext,
) -> None:
    with ExSyncClient(proxy=proxy.url, verify=client_ssl_context) as client:
        forward = [client.get(server.url + "/") for _ in range(3)]
        tunnelled = [client.get(https_server.url + "/") for _ in range(3)]
        assert [r.status_code for r in forward + tunnelled] == [200] * 6
        assert proxy.forwarded_requests[0] == server.url + "/"
        assert proxy.connect_requests == [f"127.0.0.1:{https_server.port}"]
        assert len({r.extensions[CONN_ID] for r in tunnelled}) == 1
        assert_pool_clean(client)


def test_sync_proxy_credentials_in_the_url(
    server: LoopbackServer, https_server: LoopbackServer, client_ssl_context: ssl.SSLContext
) -> None:
    with LoopbackProxy(auth=("user", "pass")) as proxy:
        authed = proxy.url.replace("http://", "http://user:pass@")
        with ExSyncClient(proxy=authed, verify=client_ssl_context) as client:
            assert client.get(server.url + "/").status_code == 200
            assert client.get(https_server.url + "/").status_code == 200
        with ExSyncClient(proxy=proxy.url, verify=client_ssl_context) as client:
            with pytest.raises(httpx.ProxyError, match="407"):
                client.get(server.url + "/")
            with pytest.raises(httpx.ProxyError, match="407"):
                client.get(https_server.url + "/")
            assert_pool_clean(client)


def test_sync_proxy_ntlm_from_threads_stays_authenticated(
    ntlm_proxy: AuthProxy,
    origin: LoopbackServer,
    tls_origin: LoopbackServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    with ExSyncClient(
        proxy=ntlm_proxy.url,
        proxy_auth=NTLMAuth(*ALICE),
        verify=client_ssl_context,
        limits=httpx.Limits(max_connections=4),
    ) as client:
        with ThreadPoolExecutor(8) as pool:
            urls = [origin.url + "/", tls_origin.url + "/"] * 50
            responses = list(pool.map(client.get, urls))
        assert [r.status_code for r in responses] == [200] * 100
        assert_pool_clean(client)


def test_sync_proxy_ntlm_and_origin_ntlm_through_a_forward_proxy(
    ntlm_proxy: AuthProxy, user_file: Path
) -> None:
    with (
        IISLikeServer(user_file=user_file) as iis,
        ExSyncClient(
            proxy=ntlm_proxy.url, proxy_auth=NTLMAuth(*ALICE), auth=NTLMAuth(*BOB)
        ) as client,
    ):
        responses = [client.get(iis.url + "/") for _ in range(3)]
        assert [r.status_code for r in responses] == [200] * 3
        assert {r.json()["user"] for r in responses} == {BOB[0]}
        assert_pool_clean(client)
