"""``httpx-extensions probe``'s report for the outcomes a live probe seldom meets.

The probe tests run it against loopback servers and proxies; these render reports and read
proxy traces directly: a proxy that asked nothing or was never reached, Basic sent with every
request, a handshake that stopped before a mechanism was known.
"""

from __future__ import annotations

from typing import Any

from httpx_extensions._cli._probe import Leg, ProbeReport, ProxyReport, _proxy_persistence, render


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
