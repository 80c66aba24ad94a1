"""``httpx-extensions probe``: what a protected endpoint offers and how a handshake goes.

One authenticated GET through ``ExClient`` with the library's own auth, traced through the
auth's private diagnostic hook (``_auth._AUTH_TRACE``: scheme, SPN, channel binding, each
exchange's status, conn_id and token sizes; never a token or a header value). Then, when it
succeeded, a second GET pinned to the same connection, to see whether the server keeps the
connection authenticated or challenges every request. When NTLM was used where Kerberos
could have been, a Kerberos-only client context for the SPN says why Kerberos was not.

With ``--proxy`` (http:// or https://), the proxy is answered with the same credentials, and
its 407 legs are traced separately (``_proxy_auth._PROXY_TRACE``) and reported on their own:
what it offered, the scheme and mechanism, each leg, and whether its connection stayed
authenticated.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import httpx
import spnego
import spnego.exceptions

from .._auth import _AUTH_TRACE, NegotiateAuth, NTLMAuth
from .._client import ExClient
from .._extensions import CONN_ID
from .._proxy_auth import _PROXY_TRACE

__all__ = ["Leg", "Persistence", "ProbeReport", "ProbeSettings", "run_probe", "render"]

_OUR_SCHEMES = ("negotiate", "kerberos", "ntlm")


@dataclass(frozen=True)
class ProbeSettings:
    url: str
    # None: the current user (Kerberos ticket cache, or SSPI on Windows).
    user: str | None
    password: str | None = field(repr=False)
    password_source: str
    force: str | None  # "ntlm", "negotiate", "kerberos" or None (automatic)
    spn_host: str | None
    channel_binding: bool
    verify: ssl.SSLContext | bool
    proxy: str | None
    timeout: float


@dataclass
class Leg:
    """One HTTP exchange of the handshake: what was sent and what came back (sizes only)."""

    number: int
    scheme: str | None
    sent_bytes: int
    status: int
    conn_id: int | None
    received_bytes: int


@dataclass
class Persistence:
    verdict: str  # "persistent", "re-challenges every request", "unknown"
    detail: str
    status: int | None = None
    conn_id: int | None = None
    round_trips: int = 0


@dataclass
class ProxyReport:
    """The proxy's side of a probe: its 407 legs, apart from the server's."""

    url: str
    offered: list[str] = field(default_factory=list)
    scheme: str | None = None
    mechanism: str | None = None
    legs: list[Leg] = field(default_factory=list)
    persistence: str | None = None


@dataclass
class ProbeReport:
    url: str
    credentials: str
    offered: list[str] = field(default_factory=list)
    anonymous_status: int | None = None
    scheme: str | None = None
    mechanism: str | None = None
    reason: str | None = None
    kerberos_error: str | None = None
    spn: str | None = None
    channel_binding: bool = False
    channel_binding_detail: str = "no handshake"
    legs: list[Leg] = field(default_factory=list)
    status: int | None = None
    round_trips: int = 0
    persistence: Persistence | None = None
    ok: bool = False
    error: str | None = None
    proxy: ProxyReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _auth(settings: ProbeSettings) -> httpx.Auth:
    if settings.force == "ntlm":
        # _app refuses --ntlm without --user, and asks for the password.
        assert settings.user is not None
        assert settings.password is not None
        return NTLMAuth(settings.user, settings.password, channel_binding=settings.channel_binding)
    return NegotiateAuth(
        settings.user,
        settings.password,
        hostname=settings.spn_host,
        allow_ntlm=settings.force != "kerberos",
        channel_binding=settings.channel_binding,
    )


def offered_schemes(response: httpx.Response) -> list[str]:
    """The scheme names of a 401's WWW-Authenticate headers (the values are not kept).

    A challenge list is ``scheme [token | params], scheme ...``: after splitting on commas,
    a piece whose first word has no ``=`` starts a challenge (``realm="a"`` does not).
    """
    names: list[str] = []
    for value in response.headers.get_list("WWW-Authenticate"):
        for piece in value.split(","):
            word = piece.strip().split(" ", 1)[0]
            if word and "=" not in word and '"' not in word and word not in names:
                names.append(word)
    return names


def _kerberos_error(settings: ProbeSettings, host: str) -> str | None:
    """Why a Kerberos-only client context for HTTP/host cannot make a token (None: it can).

    Runs in a worker thread: getting a service ticket talks to the KDC.
    """
    spn = f"HTTP/{host}"
    try:
        context = spnego.client(
            settings.user,
            settings.password,
            hostname=host,
            service="HTTP",
            protocol="kerberos",
        )
        context.step()
    except spnego.exceptions.NoCredentialError as exc:
        return f"no Kerberos ticket for {spn}: {exc.message}"
    except spnego.exceptions.SpnegoError as exc:
        return f"Kerberos failed for {spn}: {exc.message}"
    except Exception as exc:  # krb5.Krb5Error and friends, for an explicit password
        return f"Kerberos failed for {spn}: {exc}"
    return None


def _channel_binding_detail(settings: ProbeSettings, sent: bool) -> str:
    if sent:
        return "sent (tls-server-end-point of the server certificate, RFC 5929)"
    if httpx.URL(settings.url).scheme != "https":
        return "not sent: plain HTTP has no certificate to bind to"
    if not settings.channel_binding:
        return "not sent: --no-channel-binding"
    return "not sent: the connection showed no server certificate"


async def run_probe(settings: ProbeSettings) -> ProbeReport:
    """Probe ``settings.url``; never raises for what the server or the network did."""
    report = ProbeReport(
        url=settings.url,
        credentials=(
            "the current user (Kerberos ticket cache, or SSPI on Windows)"
            if settings.user is None
            else f"{settings.user} (password from {settings.password_source})"
        ),
    )
    auth = _auth(settings)
    responses: list[httpx.Response] = []
    proxy_auth: httpx.Auth | None = None
    if settings.proxy is not None and httpx.URL(settings.proxy).scheme in ("http", "https"):
        # The same credentials for the proxy (a corporate proxy and its intranet usually take
        # the same domain account); its own auth object, so their states stay apart.
        proxy_auth = _auth(settings)
        report.proxy = ProxyReport(
            url=str(httpx.URL(settings.proxy).copy_with(username=None, password=None))
        )

    async def seen(response: httpx.Response) -> None:
        responses.append(response)

    async with ExClient(
        verify=settings.verify,
        proxy=settings.proxy,
        proxy_auth=proxy_auth,  # type: ignore[arg-type]
        timeout=settings.timeout,
        event_hooks={"response": [seen]},
    ) as client:
        trace: list[dict[str, Any]] = []
        proxy_trace: list[dict[str, Any]] = []
        try:
            response: httpx.Response | None = await client.get(
                settings.url,
                auth=auth,
                extensions={_AUTH_TRACE: trace, _PROXY_TRACE: proxy_trace},
            )
        except httpx.HTTPError as exc:
            response = None
            report.error = f"{type(exc).__name__}: {exc}"
        _read_trace(report, trace, settings)
        if report.proxy is not None:
            _read_proxy_trace(report.proxy, proxy_trace)
        if responses:
            first = responses[0]
            report.anonymous_status = first.status_code
            if first.status_code == 401:
                report.offered = offered_schemes(first)
        if response is not None:
            report.status = response.status_code
            report.ok = response.status_code < 400
            if not report.ok and report.error is None:
                report.error = _failure(response, trace, report)
        await _explain_mechanism(report, settings)
        # Both sides taken (tests/test_cli.py: a failed probe skips the second request), the
        # false one not recorded: Python 3.11's tracer loses this frame after a failed await.
        if report.ok and report.legs and report.scheme is not None:  # pragma: no branch
            report.persistence = await _persistence(client, auth, settings, report)
    return report


def _read_proxy_trace(proxy: ProxyReport, trace: list[dict[str, Any]]) -> None:
    for entry in trace:
        event = entry["event"]
        if event == "exchange":
            proxy.legs.append(
                Leg(
                    number=len(proxy.legs) + 1,
                    scheme=entry["scheme"],
                    sent_bytes=entry["sent_bytes"],
                    status=entry["status"],
                    conn_id=None,
                    received_bytes=entry["received_bytes"],
                )
            )
        elif event == "offered":
            proxy.offered = list(entry["schemes"])
        elif event == "choice":
            proxy.scheme = entry["scheme"]
        elif event == "done":
            proxy.mechanism = entry["mechanism"]


def _proxy_persistence(proxy: ProxyReport, tunnelled: bool, trace: list[dict[str, Any]]) -> str:
    if not proxy.legs or proxy.legs[0].status != 407:
        return "the proxy asked for no authentication"
    if tunnelled:
        if trace:
            return "the second request needed a new CONNECT (the tunnel was not kept)"
        return "per tunnel: the second request went through the same CONNECT tunnel"
    exchanges = [entry for entry in trace if entry["event"] == "exchange"]
    if not exchanges:
        return "unknown: the second request did not reach the proxy"
    first = exchanges[0]
    if first["scheme"] is None and first["status"] != 407:
        return "persistent: a second request on the proxy connection passed without credentials"
    if first["scheme"] is None:
        return "re-challenges every request: a second request without credentials got 407"
    return f"{first['scheme']} with every request (not connection-bound)"


def _read_trace(report: ProbeReport, trace: list[dict[str, Any]], settings: ProbeSettings) -> None:
    for entry in trace:
        event = entry["event"]
        if event == "exchange":
            report.legs.append(
                Leg(
                    number=len(report.legs) + 1,
                    scheme=entry["scheme"],
                    sent_bytes=entry["sent_bytes"],
                    status=entry["status"],
                    conn_id=entry["conn_id"],
                    received_bytes=entry["received_bytes"],
                )
            )
        elif event == "choice":
            report.scheme = entry["scheme"]
        elif event == "context":
            report.spn = entry["spn"]
            report.channel_binding = entry["channel_binding"]
            report.channel_binding_detail = _channel_binding_detail(
                settings, entry["channel_binding"]
            )
        elif event in ("done", "rejected"):
            report.mechanism = entry["mechanism"]
    report.round_trips = len(report.legs)


def _failure(response: httpx.Response, trace: list[dict[str, Any]], report: ProbeReport) -> str:
    events = {entry["event"] for entry in trace}
    if "no_scheme" in events:
        offered = ", ".join(report.offered) or "nothing"
        return (
            "the server offers none of Negotiate, Kerberos, NTLM "
            f"(it offered: {offered}); this library cannot authenticate there"
        )
    if "rejected" in events:
        tried = report.mechanism or "no mechanism"
        if report.scheme is not None and report.scheme.lower() != tried:
            tried = f"{tried} via {report.scheme}"
        return (
            f"credentials rejected ({tried}): the server answered the last leg of the "
            "handshake with 401 (wrong password, unknown or locked account, or an account "
            "not allowed here)"
        )
    answer = f"{response.status_code} {response.reason_phrase}"
    if report.scheme is None:
        return f"the server answered {answer} without asking for authentication"
    if response.status_code == 403:
        return "authenticated, but the server refused access (403 Forbidden)"
    return f"the final answer was {answer}"


async def _explain_mechanism(report: ProbeReport, settings: ProbeSettings) -> None:
    """Why Kerberos or NTLM: the forced choice, the offer, or Kerberos's own error."""
    if report.scheme is None:
        return
    host = settings.spn_host or httpx.URL(settings.url).host
    if settings.force == "ntlm":
        report.reason = "forced by --ntlm"
        return
    if report.mechanism == "kerberos":
        report.reason = f"Kerberos: the server offered it and a ticket for HTTP/{host} was obtained"
        return
    if settings.force == "kerberos":
        report.reason = "forced by --kerberos (NTLM refused)"
        return
    if not {"negotiate", "kerberos"} & {name.lower() for name in report.offered}:
        report.reason = "NTLM: the server did not offer Negotiate"
        return
    report.kerberos_error = await anyio.to_thread.run_sync(_kerberos_error, settings, host)
    if report.kerberos_error is not None and report.mechanism == "ntlm":
        report.reason = f"NTLM fallback: {report.kerberos_error}"
    elif report.kerberos_error is not None:
        report.reason = f"Kerberos not possible, and no NTLM either: {report.kerberos_error}"
    else:
        report.reason = (
            f"a Kerberos token for HTTP/{host} could be made, but the handshake used "
            f"{report.mechanism or 'no mechanism'}"
        )


async def _persistence(
    client: ExClient, auth: httpx.Auth, settings: ProbeSettings, report: ProbeReport
) -> Persistence:
    """A second request, pinned to the connection the first one ended on."""
    conn_id = report.legs[-1].conn_id
    trace: list[dict[str, Any]] = []
    proxy_trace: list[dict[str, Any]] = []
    extensions = {CONN_ID: conn_id, _AUTH_TRACE: trace, _PROXY_TRACE: proxy_trace}
    try:
        await client.get(settings.url, auth=auth, extensions=extensions)
        if report.proxy is not None:
            tunnelled = httpx.URL(settings.url).scheme == "https"
            report.proxy.persistence = _proxy_persistence(report.proxy, tunnelled, proxy_trace)
    except httpx.HTTPError as exc:
        return Persistence("unknown", f"the second request failed: {type(exc).__name__}: {exc}")
    exchanges = [entry for entry in trace if entry["event"] == "exchange"]
    first = exchanges[0]
    rounds = len(exchanges)
    trips = f"{rounds} round trip{'s' if rounds != 1 else ''}"
    if first["conn_id"] != conn_id:
        return Persistence(
            "unknown",
            f"the server closed connection {conn_id} after the first request (the second "
            f"went out on connection {first['conn_id']})",
            first["status"],
            first["conn_id"],
            rounds,
        )
    if first["status"] == 401:
        return Persistence(
            "re-challenges every request",
            f"a second request on conn_id {conn_id} without a token got 401: the server "
            f"authenticates each request, not the connection (that request took {trips})",
            first["status"],
            conn_id,
            rounds,
        )
    return Persistence(
        "persistent",
        f"a second request on conn_id {conn_id} without a token got {first['status']} ({trips})",
        first["status"],
        conn_id,
        rounds,
    )


def _mechanism_name(report: ProbeReport) -> str:
    if report.mechanism is None:
        return "none: the handshake did not get that far"
    mechanism = {"ntlm": "NTLM", "kerberos": "Kerberos"}.get(report.mechanism, report.mechanism)
    if report.scheme == "Negotiate":
        return f"{mechanism} inside Negotiate"
    return mechanism


def _render_proxy(proxy: ProxyReport, row: Any) -> list[str]:
    lines = [row("proxy", proxy.url)]
    if not proxy.legs:
        return [*lines, row("proxy auth", "no exchange with the proxy was traced")]
    if proxy.legs[0].status != 407:
        lines.append(row("proxy auth", "none: the proxy asked for no authentication"))
        return lines
    lines.append(row("proxy offered", f"{', '.join(proxy.offered) or 'no scheme'} (407)"))
    if proxy.scheme is not None:
        lines.append(row("proxy scheme", proxy.scheme))
    if proxy.mechanism is not None:
        mechanism = {"ntlm": "NTLM", "kerberos": "Kerberos"}.get(proxy.mechanism, proxy.mechanism)
        lines.append(row("proxy mechanism", mechanism))
    lines.append(f"  {'leg':>3}  {'sent to the proxy':<24} {'status':>6}  proxy token")
    for leg in proxy.legs:
        if leg.scheme is None:
            sent = "no credentials"
        elif leg.sent_bytes:
            sent = f"{leg.scheme}, {leg.sent_bytes} bytes"
        else:
            sent = leg.scheme
        received = f"{leg.received_bytes} bytes" if leg.received_bytes else "-"
        lines.append(f"  {leg.number:>3}  {sent:<24} {leg.status:>6}  {received}")
    if proxy.persistence is not None:
        lines.append(row("proxy persists", proxy.persistence))
    lines.append("")
    return lines


def render(report: ProbeReport) -> list[str]:
    """The human-readable report, line by line."""

    def row(label: str, text: str) -> str:
        return f"  {label:<16} {text}"

    lines = [f"probe {report.url}"]
    if report.proxy is not None:
        lines.extend(_render_proxy(report.proxy, row))
    if report.anonymous_status == 401:
        offered = ", ".join(report.offered) or "no scheme"
        lines.append(row("offered", f"{offered} (anonymous request: 401)"))
    elif report.anonymous_status is not None:
        lines.append(
            row("offered", f"nothing: the anonymous request got {report.anonymous_status}")
        )
    lines.append(row("credentials", report.credentials))
    if report.scheme is not None:
        lines.append(row("scheme", report.scheme))
        lines.append(row("mechanism", _mechanism_name(report)))
        if report.reason:
            lines.append(row("why", report.reason))
        if report.spn:
            lines.append(row("SPN", report.spn))
        lines.append(row("channel binding", report.channel_binding_detail))
    if report.legs:
        lines.append("")
        lines.append(f"  {'leg':>3}  {'sent':<24} {'status':>6} {'conn_id':>8}  server token")
        for leg in report.legs:
            sent = "no token" if leg.scheme is None else f"{leg.scheme}, {leg.sent_bytes} bytes"
            received = f"{leg.received_bytes} bytes" if leg.received_bytes else "-"
            conn = "-" if leg.conn_id is None else str(leg.conn_id)
            lines.append(f"  {leg.number:>3}  {sent:<24} {leg.status:>6} {conn:>8}  {received}")
        lines.append("")
    if report.status is not None:
        phrase = httpx.codes.get_reason_phrase(report.status)
        trips = f"{report.round_trips} round trip{'s' if report.round_trips != 1 else ''}"
        lines.append(row("result", f"{report.status} {phrase} after {trips}"))
    if report.error is not None:
        lines.append(row("error", report.error))
    if report.persistence is not None:
        lines.append(
            row("persistence", f"{report.persistence.verdict}: {report.persistence.detail}")
        )
    return lines
