"""The flavour module (``_flavour.py``; ``_flavour_httpx2.py`` for httpx2) against the package it
mirrors. This file is generated into ``tests/httpx2/`` as well, so each check runs on both
flavours: the upstream code ExClient overrides is the code last read, the logger, the TLS
default, the methods that get ``Content-Length: 0`` and the not-followed redirect are the
upstream client's, and the stream wrapper of a patched (respx-style) pool is upstream's.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import ssl
from importlib import import_module

import httpcore
import httpx
import pytest

from httpx_extensions import CONN_ID, ExClient, ExSyncClient, ExTransport
from httpx_extensions._flavour import NAME, UPSTREAM_CODE, client_logger

from .servers import LoopbackServer

pytestmark = pytest.mark.anyio


def _upstream(qualified: str) -> object:
    """``AsyncClient.send`` -> the function in httpx (or httpx._client for BaseClient)."""
    owner_name, _, attribute = qualified.partition(".")
    owner = getattr(httpx, owner_name, None) or getattr(import_module("httpx._client"), owner_name)
    member = vars(owner)[attribute]
    return member.fget if isinstance(member, property) else member


@pytest.mark.parametrize("qualified", sorted(UPSTREAM_CODE))
def test_flavour_upstream_code_is_what_the_overrides_were_checked_against(qualified: str) -> None:
    source = inspect.getsource(_upstream(qualified))  # type: ignore[arg-type]
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    assert digest == UPSTREAM_CODE[qualified], (
        f"{NAME} {httpx.__version__} changed {qualified}: read it against ExClient's override "
        f"and record {digest} in the flavour module's UPSTREAM_CODE"
    )


def test_flavour_every_override_of_the_upstream_client_is_recorded() -> None:
    # A method ExClient overrides that UPSTREAM_CODE does not list would never be checked
    # against a new upstream release.
    overridden = set()
    for name, member in vars(ExClient).items():
        if not (callable(member) or isinstance(member, property)):
            continue
        owner = next((c for c in httpx.AsyncClient.__mro__ if name in vars(c)), object)
        if owner is not object and name not in ("__init_subclass__",):
            overridden.add(f"{owner.__name__}.{name}")
    assert "AsyncClient._send_single_request" in overridden
    assert overridden <= set(UPSTREAM_CODE) | {"BaseClient.cookies"}


def test_flavour_client_logger_is_upstreams() -> None:
    assert client_logger is import_module("httpx._client").logger
    assert client_logger.name == NAME


async def test_flavour_request_log_line_goes_to_the_upstream_logger(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with ExClient() as client:
        with caplog.at_level(logging.INFO, logger=NAME):
            await client.get(server.url + "/")
    assert [r.getMessage() for r in caplog.records if r.name == NAME] == [
        f'HTTP Request: GET {server.url}/ "HTTP/1.1 200 OK"'
    ]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "QUERY", "OPTIONS"])
async def test_flavour_bodyless_requests_get_content_length_as_upstream(method: str) -> None:
    async with ExClient() as ours, httpx.AsyncClient() as stock:
        built = ours.build_request(method, "http://example.test/")
        expected = stock.build_request(method, "http://example.test/")
    assert built.headers.get("content-length") == expected.headers.get("content-length")
    assert list(built.headers.raw) == list(expected.headers.raw)


async def test_flavour_query_method_goes_out_with_its_body(server: LoopbackServer) -> None:
    async with ExClient() as client:
        response = await client.request("QUERY", server.url + "/echo", content=b"q=1")
        assert response.status_code == 200
        assert response.json()["method"] == "QUERY"
        assert response.json()["body"] == "q=1"


def _ca_subjects(context: ssl.SSLContext) -> list[object]:
    return sorted(str(cert["subject"]) for cert in context.get_ca_certs())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_flavour_verify_true_trusts_what_upstream_trusts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # httpx: certifi's bundle; httpx2: the operating system's store (truststore on Windows
    # and macOS, OpenSSL's default locations on Linux).
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    expected = httpx.create_ssl_context(verify=True)
    async with ExTransport() as transport:
        ours = transport._ssl_context
    assert type(ours) is type(expected)
    assert ours.cert_store_stats() == expected.cert_store_stats()
    assert _ca_subjects(ours) == _ca_subjects(expected)
    assert ours.verify_mode == ssl.CERT_REQUIRED
    assert ours.check_hostname


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_flavour_verify_true_follows_ssl_cert_file_as_upstream(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str], ca: object
) -> None:
    bundle = os.path.join(tmp_path, "ca.pem")
    ca.cert_pem.write_to_path(bundle)  # type: ignore[attr-defined]
    monkeypatch.setenv("SSL_CERT_FILE", bundle)
    expected = httpx.create_ssl_context(verify=True)
    async with ExTransport() as transport:
        ours = transport._ssl_context
    assert _ca_subjects(ours) == _ca_subjects(expected)
    assert len(ours.get_ca_certs()) == 1


async def test_flavour_unfollowed_redirect_to_a_bad_location_as_upstream(
    server: LoopbackServer,
) -> None:
    # httpx raises RemoteProtocolError; httpx2 returns the response with no next_request.
    url = server.url + "/redirect?status=302&to=http://example.com:abc/"
    outcomes = []
    for client_class in (httpx.AsyncClient, ExClient):
        async with client_class() as client:
            try:
                response = await client.get(url)
            except httpx.RemoteProtocolError as exc:
                outcomes.append(("raised", str(exc)))
            else:
                outcomes.append(("returned", response.status_code, response.next_request))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_flavour_a_patched_stock_pool_is_bound_as_upstream(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What respx does: replace the stock httpcore pool's handler. ExTransport then sends
    # through a stock pool, and ExClient wraps the stream as httpx's client does.
    async def handler(self: object, request: httpcore.Request) -> httpcore.Response:
        # respx hands back the stream of the httpx response it made.
        return httpcore.Response(200, content=httpx.ByteStream(b"mocked"))

    async with ExClient() as client:
        with monkeypatch.context() as patch:
            patch.setattr(httpcore.AsyncConnectionPool, "handle_async_request", handler)
            response = await client.get("http://mocked.test/")
            assert response.content == b"mocked"
            assert CONN_ID not in response.extensions
            assert response.elapsed.total_seconds() >= 0
            bound = import_module("httpx._client").BoundAsyncStream
            assert type(response.stream) is bound
            async with client.stream("GET", "http://mocked.test/") as streamed:
                with pytest.raises(RuntimeError):
                    streamed.elapsed  # noqa: B018  (not before the response is closed)
                assert await streamed.aread() == b"mocked"
            assert streamed.elapsed.total_seconds() >= 0
        assert (await client.get(server.url + "/")).extensions[CONN_ID] >= 1


def test_flavour_a_patched_stock_sync_pool_is_bound_as_upstream(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same for ExSyncClient: a patched sync pool (respx's sync mock) is served through
    # the stock pool, and the stream gets the sync client's wrapper, which times it.
    def handler(self: object, request: httpcore.Request) -> httpcore.Response:
        return httpcore.Response(200, content=httpx.ByteStream(b"mocked"))

    with ExSyncClient() as client:
        with monkeypatch.context() as patch:
            patch.setattr(httpcore.ConnectionPool, "handle_request", handler)
            response = client.get("http://mocked.test/")
            assert response.content == b"mocked"
            assert CONN_ID not in response.extensions
            assert response.elapsed.total_seconds() >= 0
            bound = import_module("httpx._client").BoundSyncStream
            assert type(response.stream) is bound
            with client.stream("GET", "http://mocked.test/") as streamed:
                with pytest.raises(RuntimeError):
                    streamed.elapsed  # noqa: B018  (not before the response is closed)
                assert streamed.read() == b"mocked"
            assert streamed.elapsed.total_seconds() >= 0
        assert client.get(server.url + "/").extensions[CONN_ID] >= 1


async def test_flavour_query_redirected_by_302_keeps_its_method_as_upstream(
    server: LoopbackServer,
) -> None:
    # httpx turns it into a GET, as browsers do with POST; httpx2 keeps QUERY (RFC 10008 2.5).
    url = server.url + "/redirect?status=302&to=/echo"
    methods = []
    for client_class in (httpx.AsyncClient, ExClient):
        async with client_class(follow_redirects=True) as client:
            response = await client.request("QUERY", url, content=b"q=1")
            methods.append(response.json()["method"])
    assert methods[0] == methods[1]
    assert methods[1] == ("QUERY" if hasattr(httpx.AsyncClient, "query") else "GET")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_flavour_the_default_cookie_jar_is_known() -> None:
    # ExClient's empty-jar check (asked on every request) takes its shortcut only for the jar
    # classes the upstream Cookies makes; httpx2 has a jar of its own.
    from httpx_extensions._flavour import STOCK_COOKIE_JARS

    async with ExClient() as client:
        assert type(client.cookies.jar) in STOCK_COOKIE_JARS
        assert type(httpx.Cookies().jar) in STOCK_COOKIE_JARS
        assert not client.cookies
        client.cookies.set("a", "1", domain="example.test")
        assert client.cookies
        client.cookies.clear()
        assert not client.cookies
