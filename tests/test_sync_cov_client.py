"""ExSyncClient's own send path where the generated twins do not go (their async sources
are differential tests against an asyncio server): redirects on the fast path, followed or
not, a hand-built request, an explicit timeout extension, a Host header of the caller's, a
bodyless POST, the cookies setter, the INFO log line, a subclass that overrides a send step,
a flow that ends with a connection over the keep-alive bound, the default TLS context when
the environment names no CA, a pin of the wrong type, and the client's own auth driver meeting
a redirect or a body that stalls. Real loopback servers."""

from __future__ import annotations

import json
import logging
import ssl

import httpx
import pytest

from httpx_extensions import CONN_ID, ExSyncClient, ExSyncTransport, NTLMAuth

from .servers import LoopbackServer
from .test_sync_client import ALICE, assert_pool_clean


def test_sync_cov_client_redirect_on_the_fast_path_followed_or_not(
    server: LoopbackServer,
) -> None:
    with ExSyncClient() as client:
        unfollowed = client.get(server.url + "/redirect?to=/echo")
        assert unfollowed.status_code == 302
        assert unfollowed.next_request is not None
        assert unfollowed.next_request.url == server.url + "/echo"
        followed = client.get(server.url + "/redirect?to=/echo", follow_redirects=True)
        assert followed.status_code == 200
        assert [r.status_code for r in followed.history] == [302]
        assert json.loads(followed.text)["path"] == "/echo"
        assert_pool_clean(client)


def test_sync_cov_client_redirect_to_a_bad_location_closes_the_response(
    server: LoopbackServer,
) -> None:
    with ExSyncClient(follow_redirects=True) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(server.url + "/redirect?to=http://%5B::1")  # no closing bracket
        assert_pool_clean(client)  # the 302 was closed, its connection given back
        assert client.get(server.url + "/").status_code == 200


def test_sync_cov_client_hand_built_request_and_explicit_timeout(server: LoopbackServer) -> None:
    with ExSyncClient(timeout=httpx.Timeout(10, read=0.2)) as client:
        # A request built without the client gets the client's timeout (as httpx.Client).
        with pytest.raises(httpx.ReadTimeout):
            client.send(httpx.Request("GET", server.url + "/hang"))
        # An explicit timeout extension is the request's own: longer than the client's.
        slow = client.get(
            server.url + "/slow?delay=0.4",
            extensions={"timeout": httpx.Timeout(10).as_dict()},
        )
        assert slow.text == "slow"
        assert_pool_clean(client)


def test_sync_cov_client_callers_host_header_and_bodyless_post(server: LoopbackServer) -> None:
    with ExSyncClient() as client:
        echoed = json.loads(client.get(server.url + "/echo", headers={"Host": "a.test"}).text)
        hosts = [value for name, value in echoed["headers"] if name.lower() == "host"]
        assert hosts == ["a.test"]  # the caller's, not a second one
        posted = json.loads(client.post(server.url + "/echo").text)
        lengths = [v for name, v in posted["headers"] if name.lower() == "content-length"]
        assert posted["method"] == "POST"
        assert lengths == ["0"]
        assert_pool_clean(client)


def test_sync_cov_client_cookies_setter_replaces_the_jar(server: LoopbackServer) -> None:
    with ExSyncClient(cookies={"old": "1"}) as client:
        client.cookies = {"new": "2"}
        echoed = json.loads(client.get(server.url + "/echo").text)
        cookies = [value for name, value in echoed["headers"] if name.lower() == "cookie"]
        assert cookies == ["new=2"]


def test_sync_cov_client_logs_each_request_at_info(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    with ExSyncClient() as client, caplog.at_level(logging.INFO, "httpx"):
        client.get(server.url + "/status/204")
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines == [f'HTTP Request: GET {server.url}/status/204 "HTTP/1.1 204 No Content"']


def test_sync_cov_client_subclass_overriding_a_send_step_is_called(
    server: LoopbackServer,
) -> None:
    seen: list[str] = []

    class Recording(ExSyncClient):
        def _send_handling_redirects(  # type: ignore[override]
            self, request: httpx.Request, *args: object, **kwargs: object
        ) -> httpx.Response:
            seen.append(str(request.url))
            return super()._send_handling_redirects(request, *args, **kwargs)  # type: ignore[arg-type]

    with Recording() as client:
        assert client.get(server.url + "/").status_code == 200
        assert_pool_clean(client)
    assert seen == [server.url + "/"]


def test_sync_cov_client_flow_ending_over_the_keepalive_bound_closes_the_oldest(
    server: LoopbackServer, other_server: LoopbackServer
) -> None:
    # A redirect runs in one flow: its connection is reserved to it until send() ends, then
    # freed; with one idle connection allowed, the older idle one is closed then.
    limits = httpx.Limits(max_keepalive_connections=1)
    with ExSyncClient(limits=limits, follow_redirects=True) as client:
        first = client.get(server.url + "/")
        redirected = client.get(other_server.url + "/redirect?to=/")
        assert redirected.status_code == 200
        assert [info.conn_id for info in client.connections] == [redirected.extensions[CONN_ID]]
        assert first.extensions[CONN_ID] != redirected.extensions[CONN_ID]  # closed
        assert_pool_clean(client)


def test_sync_cov_client_default_tls_context_is_built_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    expected = httpx.create_ssl_context(verify=True)
    with ExSyncTransport() as transport:
        assert transport._ssl is None  # nothing loaded until a TLS connection needs it
        ours = transport._ssl_context
        assert ours is transport._ssl_context  # built once
    assert ours.verify_mode == ssl.CERT_REQUIRED
    assert ours.check_hostname
    assert ours.cert_store_stats() == expected.cert_store_stats()


def test_sync_cov_client_pin_of_the_wrong_type_says_what_to_pass(server: LoopbackServer) -> None:
    with ExSyncClient() as client:
        first = client.get(server.url + "/")
        with pytest.raises(TypeError, match="must be the int found on"):
            client.get(server.url + "/", extensions={CONN_ID: str(first.extensions[CONN_ID])})
        assert_pool_clean(client)


# NTLMAuth against a server that never challenges: the handshake's first leg is the whole
# exchange, so the client's own auth driver meets redirects and body errors itself.


def test_sync_cov_client_auth_driver_follows_a_redirect_of_the_first_leg_or_not(
    server: LoopbackServer,
) -> None:
    with ExSyncClient(auth=NTLMAuth(*ALICE)) as client:
        unfollowed = client.get(server.url + "/redirect?to=/echo")
        assert unfollowed.status_code == 302
        assert unfollowed.next_request is not None
        followed = client.get(server.url + "/redirect?to=/echo", follow_redirects=True)
        assert followed.status_code == 200
        assert [r.status_code for r in followed.history] == [302]
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(server.url + "/redirect?to=http://%5B::1", follow_redirects=True)
        assert_pool_clean(client)
        assert client.get(server.url + "/").status_code == 200


def test_sync_cov_client_auth_driver_body_error_closes_the_response(
    server: LoopbackServer,
) -> None:
    # The body stalls past the read timeout after the head came: the error carries the
    # request and the connection is closed, not left checked out.
    with ExSyncClient(auth=NTLMAuth(*ALICE), timeout=httpx.Timeout(10, read=0.2)) as client:
        url = server.url + "/stream?chunks=3&size=10&delay=5"
        with pytest.raises(httpx.ReadTimeout) as caught:
            client.get(url)
        assert caught.value.request.url == url
        assert_pool_clean(client)
        assert client.connections == []
