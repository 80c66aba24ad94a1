"""``httpx-extensions probe``'s report for the outcomes a live probe seldom meets.

The probe tests run it against loopback servers and proxies; these render reports and read
proxy traces directly: a proxy that asked nothing or was never reached, Basic sent with every
request, a handshake that stopped before a mechanism was known.
"""

from __future__ import annotations

from typing import Any

import httpx

from httpx_extensions._cli._probe import (
    Leg,
    ProbeReport,
    ProbeSettings,
    ProxyReport,
    _channel_binding_detail,
    _failure,
    _proxy_persistence,
    _read_proxy_trace,
    render,
)


def _leg(status: int, scheme: str | None = None, sent: int = 0) -> Leg:
    return Leg(1, scheme, sent, status, None, 0)


def _exchange(scheme: str | None, status: int) -> dict[str, Any]:
    return {"event": "exchange", "scheme": scheme, "status": status}


def test_cli_probe_proxy_persistence_verdicts() -> None:
    asked = ProxyReport("http://proxy:8080", legs=[_leg(407), _leg(200, "Basic")])
    assert (
        _proxy_persistence(ProxyReport("p"), False, []) == "the proxy asked for no authentication"
    )
    assert _proxy_persistence(ProxyReport("p", legs=[_leg(200)]), False, []).startswith(
        "the proxy asked for no"
    )
    assert _proxy_persistence(asked, True, [_exchange(None, 407)]).startswith(
        "the second request needed a new CONNECT"
    )
    assert _proxy_persistence(asked, True, []).startswith("per tunnel")
    assert _proxy_persistence(asked, False, [{"event": "offered"}]).startswith(
        "unknown: the second request did not reach the proxy"
    )
    assert _proxy_persistence(asked, False, [_exchange(None, 200)]).startswith("persistent")
    assert _proxy_persistence(asked, False, [_exchange(None, 407)]).startswith(
        "re-challenges every request"
    )
    assert (
        _proxy_persistence(asked, False, [_exchange("Basic", 200)])
        == "Basic with every request (not connection-bound)"
    )


def test_cli_probe_render_proxy_never_reached_or_asking_nothing() -> None:
    never = render(ProbeReport("http://a/", "alice", proxy=ProxyReport("http://proxy:8080")))
    assert "  proxy auth       no exchange with the proxy was traced" in never
    nothing = ProbeReport("http://a/", "alice", proxy=ProxyReport("http://p", legs=[_leg(200)]))
    assert "  proxy auth       none: the proxy asked for no authentication" in render(nothing)


def test_cli_probe_render_proxy_basic_leg_and_no_scheme_offered() -> None:
    proxy = ProxyReport("http://p", legs=[_leg(407), Leg(2, "Basic", 0, 200, None, 0)])
    lines = render(ProbeReport("http://a/", "alice", proxy=proxy))
    assert "  proxy offered    no scheme (407)" in lines
    assert not any(line.startswith("  proxy scheme") for line in lines)
    assert not any(line.startswith("  proxy persists") for line in lines)
    assert "    2  Basic                       200  -" in lines  # Basic: no token size


def test_cli_probe_render_handshake_without_mechanism_or_anonymous_request() -> None:
    report = ProbeReport("http://a/", "alice", scheme="NTLM", status=401, round_trips=1)
    lines = render(report)
    assert "  mechanism        none: the handshake did not get that far" in lines
    assert not any(line.startswith(("  offered", "  why", "  SPN")) for line in lines)
    assert "  result           401 Unauthorized after 1 round trip" in lines


def test_cli_probe_render_plain_ntlm_mechanism_is_not_said_to_be_inside_negotiate() -> None:
    report = ProbeReport("http://a/", "alice", scheme="NTLM", mechanism="ntlm", status=200)
    assert "  mechanism        NTLM" in render(report)
    wrapped = ProbeReport("http://a/", "alice", scheme="Negotiate", mechanism="ntlm", status=200)
    assert "  mechanism        NTLM inside Negotiate" in render(wrapped)


def test_cli_probe_channel_binding_not_sent_over_https_without_a_certificate() -> None:
    settings = ProbeSettings(
        url="https://a/",
        user="alice",
        password="x",
        password_source="option",
        force=None,
        spn_host=None,
        channel_binding=True,
        verify=True,
        proxy=None,
        timeout=5.0,
    )
    assert _channel_binding_detail(settings, False) == (
        "not sent: the connection showed no server certificate"
    )
    assert _channel_binding_detail(settings, True).startswith("sent (tls-server-end-point")


def test_cli_probe_proxy_trace_events_it_does_not_report_are_skipped() -> None:
    proxy = ProxyReport("http://p")
    _read_proxy_trace(
        proxy,
        [
            {"event": "offered", "schemes": ["NTLM"]},
            {"event": "rejected", "mechanism": "ntlm"},  # not part of the proxy's report
            {"event": "done", "mechanism": "ntlm"},
        ],
    )
    assert proxy.offered == ["NTLM"]
    assert proxy.mechanism == "ntlm"
    assert proxy.legs == []


def test_cli_probe_failure_after_authenticating_names_the_final_answer() -> None:
    report = ProbeReport("http://a/", "alice", scheme="NTLM", mechanism="ntlm")
    forbidden = httpx.Response(403)
    assert _failure(forbidden, [], report) == (
        "authenticated, but the server refused access (403 Forbidden)"
    )
    assert _failure(httpx.Response(500), [], report) == (
        "the final answer was 500 Internal Server Error"
    )
