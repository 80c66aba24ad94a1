"""Authentication to HTTP proxies: the 407 handshake driver.

A proxy that wants credentials answers ``407 Proxy Authentication Required`` with
``Proxy-Authenticate`` headers naming its schemes; the client answers on the *same connection*
with ``Proxy-Authorization``. NTLM and Negotiate authenticate the connection to the proxy (as
Squid and the Windows proxies do), so a handshake must stay on one socket, and afterwards the
connection needs no header. Basic and Digest go with every request.

The transport owns the sockets; this module decides what to send. ``ProxyAuthenticator.run``
drives one request (a CONNECT, or a forward-proxied request) over a :class:`Channel` that the
transport implements: send one leg with a given ``Proxy-Authorization`` value, say whether the
connection is still usable, reconnect when the proxy closed it. Why in the transport and not in
the httpx auth flow: a 407 to CONNECT is answered while the connection is being opened, before
any response exists for a flow to see, and keeping forward proxying in the same place means one
loop, one set of errors, and a connection held (never back in the pool) between legs.

Handshake state lives in locals of ``run``; the authenticator keeps only what it has learnt
about its proxy (which scheme it chose), so one instance serves any number of concurrent
requests. Nothing here logs or raises a token, a password or a header value.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import importlib
import logging
import secrets
import ssl
import sys
import typing
from collections.abc import Generator, Hashable
from urllib.request import parse_http_list, parse_keqv_list

import httpx

from ._exceptions import ProxyAuthenticationError

if typing.TYPE_CHECKING:
    import httpcore
    import spnego

    from ._auth import NegotiateAuth, NTLMAuth, _SpnegoAuth
    from ._http11 import ResponseHead

    #: What ``proxy_auth=`` and ``Proxy(auth=...)`` accept.
    ProxyAuthTypes: typing.TypeAlias = (
        NTLMAuth | NegotiateAuth | httpx.BasicAuth | httpx.DigestAuth | tuple[str, str]
    )
    _AnyAuth: typing.TypeAlias = "_SpnegoAuth | httpx.BasicAuth | _Digest"

# The auth module (pyspnego and its crypto stack) is imported only when an NTLM/Negotiate
# handshake is needed: `import httpx_extensions` must not load it (tests/test_imports.py).
# An object can only be an NTLMAuth or NegotiateAuth once that module has been imported.
_AUTH_MODULE = __name__.rpartition(".")[0] + "._auth"


def _is_spnego(auth: object) -> typing.TypeGuard[_SpnegoAuth]:
    module = sys.modules.get(_AUTH_MODULE)
    return module is not None and isinstance(auth, module._SpnegoAuth)


def _auth_module() -> typing.Any:
    return importlib.import_module(_AUTH_MODULE)


__all__ = ["Channel", "Proxy", "ProxyAuthTypes", "ProxyAuthenticator", "check_proxy_auth"]

logger = logging.getLogger("httpx_extensions.auth")

_ACCEPTED = (
    "NTLMAuth(user, password), NegotiateAuth(...), httpx.BasicAuth(user, password), "
    "httpx.DigestAuth(user, password) or a (user, password) tuple"
)

# Private diagnostic hook (``httpx-extensions probe --proxy``), the proxy's twin of
# ``_auth._AUTH_TRACE``: a request whose extensions hold a list under this key gets one dict
# appended per exchange with the proxy (method, scheme, token sizes, status), per choice of
# scheme and per finished handshake. Never a token or a header value.
_PROXY_TRACE = "httpx_extensions.proxy_trace"

# How many requests one handshake may take (NTLM needs 3 with the anonymous one, SPNEGO 4),
# reconnects included.
_MAX_LEGS = 8

# The most of a 407's body read to keep its connection for the next leg. A 407 body is an
# error page of a few KiB; one that goes on past this (a hostile or broken proxy streaming
# without end, which no read timeout stops while bytes keep coming) costs the connection
# instead: it is closed and the next leg goes on a new one.
_MAX_407_BODY = 1 << 20

# curl's --proxy-anyauth order: the strongest scheme the proxy offers wins.
_STRENGTH = ("negotiate", "kerberos", "ntlm", "digest", "basic")


def check_proxy_auth(auth: object, name: str = "proxy_auth") -> ProxyAuthTypes | None:
    """``auth`` when it is something a proxy can be answered with; TypeError otherwise."""
    if auth is None:
        return None
    if _is_spnego(auth) or isinstance(auth, (httpx.BasicAuth, httpx.DigestAuth)):
        return auth  # type: ignore[return-value]
    if isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(part, str) for part in auth):
        return (auth[0], auth[1])
    raise TypeError(f"{name} must be {_ACCEPTED}, not {type(auth).__name__}")


class Proxy(httpx.Proxy):
    """An ``httpx.Proxy`` whose ``auth`` may also be an auth object.

    ``httpx.Proxy`` takes only a ``(user, password)`` tuple (sent as Basic). This one also takes
    ``NTLMAuth``, ``NegotiateAuth``, ``httpx.BasicAuth`` and ``httpx.DigestAuth``, answered
    at the proxy's 407 (see ``docs/proxies.md``). Use it for ``ExClient(proxy=...)``,
    ``ExTransport(proxy=...)`` and in ``mounts=``.

    Args:
        url: ``http://`` or ``https://`` (or ``socks5://``, with a tuple only). Credentials in
            the URL (``http://DOMAIN%5Cuser:pw@proxy:8080``) are taken as a tuple.
        ssl_context: TLS context for an ``https://`` proxy.
        auth: How to answer the proxy.
        headers: Extra headers for the proxy.

    Raises:
        TypeError: ``auth`` is none of the accepted kinds.
    """

    def __init__(
        self,
        url: httpx.URL | str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        auth: ProxyAuthTypes | None = None,
        headers: httpx._types.HeaderTypes | None = None,
    ) -> None:
        checked = check_proxy_auth(auth, "Proxy(auth=...)")
        plain = checked if isinstance(checked, tuple) else None
        super().__init__(url, ssl_context=ssl_context, auth=plain, headers=headers)
        if plain is None and checked is not None:
            # An auth object wins over credentials in the URL: it was given explicitly.
            self.auth = checked  # type: ignore[assignment]
        if not isinstance(self.auth, (tuple, type(None))) and self.url.scheme.startswith("socks"):
            raise TypeError("a SOCKS5 proxy takes a (user, password) tuple only")

    @property
    def raw_auth(self) -> tuple[bytes, bytes] | None:
        # httpx's SOCKS and Basic code read this; an auth object has no raw form.
        if isinstance(self.auth, tuple):
            return super().raw_auth
        return None

    def __repr__(self) -> str:
        auth = self.auth
        if isinstance(auth, tuple):
            shown = f", auth={(auth[0], '********')!r}"
        elif auth is not None:
            # NTLMAuth/NegotiateAuth reprs show the user only; httpx's show nothing.
            shown = f", auth={auth!r}"
        else:
            shown = ""
        headers = f", headers={dict(self.headers)!r}" if self.headers else ""
        return f"Proxy({str(self.url)!r}{shown}{headers})"


class Channel(typing.Protocol):
    """What the driver needs of the transport: one proxy connection it may replace."""

    @property
    def network_stream(self) -> httpcore.AsyncNetworkStream:
        """The stream to the proxy (TLS for an ``https://`` proxy), for channel binding."""
        ...

    #: True when a connection-bound scheme (NTLM, Negotiate) completed on this connection.
    authenticated: bool

    async def send(self, proxy_authorization: bytes | None, *, body: bool) -> ResponseHead:
        """One request to the proxy; ``body=False`` for an NTLM negotiate leg (no upload)."""
        ...

    def reusable(self) -> bool:
        """Whether another request can go on this connection (after a drained 407)."""
        ...

    async def reconnect(self) -> None:
        """Close this connection and open a new one to the proxy."""
        ...


@dataclasses.dataclass(frozen=True)
class _ProxyPartition:
    """The pool partition part for the identity presented to a proxy (no secret in repr)."""

    proxy: str
    identity: Hashable = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class _Credentials:
    """A user and password to answer with whatever scheme the proxy offers (anyauth)."""

    user: str
    password: str = dataclasses.field(repr=False)


def parse_challenges(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Schemes in the ``Proxy-Authenticate`` headers (lowercased) -> the challenge text.

    The text is the whole challenge (``Digest realm=..., nonce=...``), or ``NTLM <token>``.
    Parameters of Basic and Digest hold commas, so a part only starts a new challenge when
    its first word is not a ``name=value`` parameter; commas inside a quoted string
    (``realm="Example, Inc."``) split nothing.
    """
    found: dict[str, str] = {}
    for key, raw in headers:
        if key.lower() != b"proxy-authenticate":
            continue
        value = raw.decode("latin-1")
        current: str | None = None
        for part in _split_outside_quotes(value):
            stripped = part.strip()
            first = stripped.split(" ", 1)[0]
            if stripped and "=" not in first:
                current = first.lower()
                found.setdefault(current, stripped)
            elif current is not None and stripped:
                found[current] = found[current] + ", " + stripped
    return found


def _split_outside_quotes(value: str) -> list[str]:
    """``value`` split at the commas that are not inside a quoted string (RFC 9110 5.6.4)."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _token(challenge: str | None) -> bytes | None:
    if challenge is None:
        return None
    _, _, data = challenge.partition(" ")
    data = data.strip()
    if not data:
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None  # a malformed challenge token: treated as a rejection


def _header(scheme: str, token: bytes | None) -> bytes:
    return scheme.encode("ascii") + b" " + base64.b64encode(token or b"")


def _auth_header(flow: Generator[httpx.Request, httpx.Response, None]) -> bytes | None:
    """The Authorization an httpx auth flow (Basic) puts on its first request, if any."""
    try:
        request = next(flow)
    except StopIteration:  # pragma: no cover - BasicAuth always yields
        return None
    value = request.headers.get("Authorization")
    return value.encode("latin-1") if value is not None else None


class _Digest:
    """Digest (RFC 7616) for a proxy: the digest-uri is the request target of the proxy
    request (``host:port`` for CONNECT, the absolute URL when forwarding), which
    ``httpx.DigestAuth`` cannot produce (it hashes the URL's path).

    The last challenge is shared by the requests of one transport, as httpx shares it, so
    later requests answer at once; the nonce count goes up with each use.
    """

    _HASHES: typing.ClassVar[dict[str, str]] = {
        "MD5": "md5",
        "MD5-SESS": "md5",
        "SHA": "sha1",
        "SHA-SESS": "sha1",
        "SHA-256": "sha256",
        "SHA-256-SESS": "sha256",
        "SHA-512": "sha512",
        "SHA-512-SESS": "sha512",
    }

    def __init__(self, user: str, password: str) -> None:
        self._user = user
        self._password = password
        self._challenge: dict[str, str] | None = None
        self._count = 0

    @classmethod
    def of(cls, auth: httpx.DigestAuth) -> _Digest:
        # httpx.DigestAuth keeps the credentials as private bytes attributes; read once here.
        try:
            user, password = auth._username, auth._password
        except AttributeError as exc:  # pragma: no cover - a future httpx
            raise TypeError(
                "this httpx.DigestAuth has no credentials ExClient can read for a proxy; "
                "pass proxy_auth=(user, password) instead"
            ) from exc
        return cls(user.decode("utf-8"), password.decode("utf-8"))

    def __repr__(self) -> str:
        return f"DigestAuth({self._user!r})"

    def learn(self, challenge: str) -> bool:
        """Take a challenge (``Digest realm=..., nonce=...``); False when it is unusable."""
        _, _, fields = challenge.partition(" ")
        params = {k.lower(): v for k, v in parse_keqv_list(parse_http_list(fields)).items()}
        if "realm" not in params or "nonce" not in params:
            return False
        if params.get("algorithm", "MD5").upper() not in self._HASHES:
            return False
        qop = params.get("qop")
        if qop is not None and "auth" not in [q.strip() for q in qop.split(",")]:
            return False
        self._challenge = params
        self._count = 0
        return True

    @property
    def nonce(self) -> str | None:
        return self._challenge["nonce"] if self._challenge is not None else None

    def header(self, method: str, uri: str) -> bytes | None:
        challenge = self._challenge
        if challenge is None:
            return None
        algorithm = challenge.get("algorithm", "MD5").upper()
        name = self._HASHES[algorithm]

        def h(data: str) -> str:
            return hashlib.new(name, data.encode("utf-8")).hexdigest()

        self._count += 1
        nc = f"{self._count:08x}"
        cnonce = secrets.token_hex(8)
        realm, nonce = challenge["realm"], challenge["nonce"]
        ha1 = h(f"{self._user}:{realm}:{self._password}")
        if algorithm.endswith("-SESS"):
            ha1 = h(f"{ha1}:{nonce}:{cnonce}")
        ha2 = h(f"{method}:{uri}")
        fields = [
            f'username="{_quote(self._user)}"',
            f'realm="{_quote(realm)}"',
            f'nonce="{_quote(nonce)}"',
            f'uri="{_quote(uri)}"',
        ]
        if "qop" in challenge:
            response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        else:
            response = h(f"{ha1}:{nonce}:{ha2}")
        fields += [f'response="{response}"', f"algorithm={challenge.get('algorithm', 'MD5')}"]
        if "opaque" in challenge:
            fields.append(f'opaque="{_quote(challenge["opaque"])}"')
        return ("Digest " + ", ".join(fields)).encode("utf-8")


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclasses.dataclass(frozen=True)
class _Method:
    """A scheme chosen for a proxy: how to answer it."""

    key: str  # lowercased scheme of the Proxy-Authenticate header: "ntlm", "basic", ...
    header: str  # the scheme as written in Proxy-Authorization
    protocol: str | None  # pyspnego's protocol for NTLM/Negotiate/Kerberos
    auth: _AnyAuth


def _spnego_method(auth: _SpnegoAuth, offered: dict[str, str]) -> _Method | None:
    tokens = {key: _token(offered[key]) for key in offered if key in _SPNEGO}
    choice = auth._choose(tokens)
    if choice is None:
        return None
    return _Method(choice[0].lower(), choice[0], choice[1], auth)


_SPNEGO = ("negotiate", "kerberos", "ntlm")


class ProxyAuthenticator:
    """Answers one proxy's 407s with one set of credentials (an object per transport).

    Args:
        auth: What ``check_proxy_auth`` accepted, or None (then a 407 is explained, not
            answered).
        proxy_url: The proxy (credentials in it are ignored here: they come as ``auth``).
    """

    def __init__(self, auth: ProxyAuthTypes | None, proxy_url: httpx.URL) -> None:
        self._proxy_url = proxy_url.copy_with(username=None, password=None)
        self._proxy = str(self._proxy_url).rstrip("/")
        self._auth: _AnyAuth | _Credentials | None
        if isinstance(auth, tuple):
            self._auth = _Credentials(*auth)
        elif isinstance(auth, httpx.DigestAuth):
            self._auth = _Digest.of(auth)
        else:
            self._auth = auth
        # Auth objects made for URL credentials, one per scheme, kept for what they learn.
        self._anyauth: dict[str, _AnyAuth] = {}
        # What the proxy was seen to want, learnt at its first 407 and then answered at once
        # on every new connection (no anonymous request first).
        self._learnt: _Method | None = None
        self._logged: set[str] = set()
        # Set when the proxy answered 407 on a connection it had authenticated (IIS's
        # authPersistSingleRequest, some gateways): then every request starts the handshake.
        self._rechallenges = False
        if isinstance(self._auth, httpx.BasicAuth):
            # Basic given explicitly: sent with the first request, as httpx does.
            self._learnt = _Method("basic", "Basic", None, self._auth)
        self.partition: _ProxyPartition | None = None
        if self._auth is not None:
            self.partition = _ProxyPartition(self._proxy, _identity(self._auth))

    @property
    def configured(self) -> bool:
        """Whether credentials were given (otherwise a 407 is explained, not answered)."""
        return self._auth is not None

    def may_challenge(self) -> bool:
        """Whether a request may meet a 407 it must be sent again for (all but Basic)."""
        return self._learnt is None or self._learnt.key != "basic"

    def __repr__(self) -> str:
        return f"<ProxyAuthenticator {self._proxy} {self._auth!r}>"

    def _choose(self, offered: dict[str, str]) -> _Method | None:
        auth = self._auth
        if _is_spnego(auth):
            return _spnego_method(auth, offered)
        if isinstance(auth, httpx.BasicAuth):
            return _Method("basic", "Basic", None, auth) if "basic" in offered else None
        if isinstance(auth, _Digest):
            return _Method("digest", "Digest", None, auth) if "digest" in offered else None
        if not isinstance(auth, _Credentials):
            return None
        # curl's --proxy-anyauth: the strongest scheme offered, with these credentials.
        for key in _STRENGTH:
            if key not in offered:
                continue
            if key in ("negotiate", "kerberos") and "ntlm" in offered and "@" not in auth.user:
                # DOMAIN\user is no Kerberos principal: NTLM, offered too, is what can work
                # (asking a KDC about DOMAIN\user would only fail).
                continue
            made = self._anyauth.get(key)
            if made is None:
                made = self._anyauth[key] = _for_scheme(key, auth)
            method: _Method | None
            if _is_spnego(made):
                method = _spnego_method(made, {key: offered[key]})
            else:
                method = _Method(key, key.capitalize(), None, made)
            if method is None:  # pragma: no cover - each class accepts its own scheme
                continue
            if method.key not in self._logged:
                self._logged.add(method.key)
                logger.info(
                    "proxy %s offered %s: answering with %s and the proxy URL's credentials",
                    self._proxy,
                    ", ".join(_display(k) for k in offered),
                    method.header,
                )
            return method
        return None

    async def run(
        self,
        channel: Channel,
        method: str,
        target: str,
        trace: list[dict[str, object]] | None = None,
    ) -> ResponseHead:
        """Send one request through ``channel``, answering 407s; the final response head.

        Raises:
            ProxyAuthenticationError: a final 407 (no credentials given, none for the schemes
                offered, credentials rejected, the proxy closed between legs).
        """
        leg = _Handshake(self, channel, method, target)
        value = await leg.opening()
        if trace is not None and leg.method is not None:
            trace.append({"event": "choice", "scheme": leg.method.header, "preemptive": True})
        restarts = 0
        for _ in range(_MAX_LEGS):
            head = await channel.send(value, body=not leg.intermediate)
            offered = parse_challenges(head.headers) if head.status == 407 else {}
            if trace is not None:
                trace.append(_exchange_record(method, value, head, leg))
            if head.status != 407:
                await leg.finished(head)
                if trace is not None and leg.context is not None:
                    mechanism = _auth_module()._mechanism(leg.context)
                    trace.append({"event": "done", "mechanism": mechanism})
                return head
            if trace is not None and not leg.sent:
                trace.append({"event": "offered", "schemes": [_display(k) for k in offered]})
            await _drain(head.stream, self._proxy)
            if leg.on_authenticated and not self._rechallenges:
                self._rechallenges = True
                logger.debug("proxy %s re-challenged an authenticated connection", self._proxy)
            alive = channel.reusable()
            chose = not leg.sent
            value = await leg.after_407(offered)
            if trace is not None and chose and leg.method is not None:
                trace.append({"event": "choice", "scheme": leg.method.header, "preemptive": False})
            if trace is not None and not alive:
                trace.append({"event": "closed"})
            if alive:
                continue
            if leg.bound_to_connection and leg.mid_handshake:
                # The challenge belongs to the closed connection: the proxy cannot
                # check an answer sent on another. Start over on a new one, once.
                restarts += 1
                if restarts > 1:
                    raise self._error(
                        offered,
                        "closed",
                        "it closed the connection between the legs of the "
                        f"{leg.method_name} handshake, which cannot move to another "
                        "connection",
                    )
                value = await leg.restart()
            await channel.reconnect()
        raise self._error({}, "closed", f"the handshake did not finish after {_MAX_LEGS} legs")

    def _error(self, offered: dict[str, str], reason: str, why: str) -> ProxyAuthenticationError:
        schemes = tuple(_display(key) for key in offered)
        return ProxyAuthenticationError(
            f"Proxy authentication to {self._proxy} failed "
            f"(407, offered: {', '.join(schemes) or 'no scheme'}): {why}.",
            proxy=self._proxy,
            offered=schemes,
            reason=reason,
        )


async def _drain(stream: typing.AsyncIterable[bytes], proxy: object) -> None:
    """Read a 407's body so its connection can carry the next leg, up to ``_MAX_407_BODY``
    bytes; past that, stop reading and leave the connection mid-body, so that it is not
    reusable and the caller reconnects."""
    read = 0
    async for chunk in stream:
        read += len(chunk)
        if read > _MAX_407_BODY:
            logger.debug(
                "proxy %s sent a 407 body of more than %d bytes: closing its connection",
                proxy,
                _MAX_407_BODY,
            )
            aclose = getattr(stream, "aclose", None)
            # Always true: a body held in memory at once (_http11's _Once) is at most one
            # 64 KiB read past the head, far under _MAX_407_BODY; longer ones are generators.
            if aclose is not None:  # pragma: no branch - see above
                await aclose()  # the body generator ends here, not when collected
            return


class _Handshake:
    """The state of one request's proxy handshake (locals of ``ProxyAuthenticator.run``)."""

    def __init__(
        self, owner: ProxyAuthenticator, channel: Channel, method: str, target: str
    ) -> None:
        self.owner = owner
        self.channel = channel
        self.request_method = method
        self.target = target
        self.method: _Method | None = None
        self.context: spnego.ContextProxy | None = None
        self.nonce: str | None = None  # the Digest nonce the last leg answered
        self.sent = False  # credentials went out with the last leg
        self.intermediate = False  # the last leg was NTLM's negotiate message
        self.mid_handshake = False  # a challenge token of the proxy was answered
        self.on_authenticated = False  # the first leg relied on the connection's auth

    @property
    def bound_to_connection(self) -> bool:
        return self.method is not None and self.method.protocol is not None

    @property
    def method_name(self) -> str:
        return self.method.header if self.method is not None else ""

    def _request(self) -> httpx.Request:
        # What the auth objects see: the proxy's URL (the SPN is HTTP/<proxy>; errors name the
        # proxy); Digest hashes the request target, absolute-form for forward proxying.
        if self.request_method == "CONNECT":
            return httpx.Request("CONNECT", self.owner._proxy_url)
        return httpx.Request(self.request_method, self.target)

    async def opening(self) -> bytes | None:
        """The Proxy-Authorization of the first leg: at once when the scheme is known."""
        learnt = self.owner._learnt
        if learnt is None:
            return None
        if (
            learnt.protocol is not None
            and self.channel.authenticated
            and not self.owner._rechallenges
        ):
            self.on_authenticated = True
            return None  # this connection is authenticated already
        self.method = learnt
        return await self._start()

    async def restart(self) -> bytes | None:
        return await self._start()

    async def _start(self, challenge: str | None = None) -> bytes | None:
        method = self.method
        assert method is not None
        self.context = None
        self.intermediate = self.mid_handshake = False
        auth = method.auth
        if _is_spnego(auth):
            assert method.protocol is not None
            bindings = None
            if auth._channel_binding:
                # An https:// proxy: bound to the proxy's certificate (None over plain TCP).
                bindings = _auth_module()._channel_bindings(
                    httpx.Response(200, extensions={"network_stream": self.channel.network_stream})
                )
            request = self._request()
            try:
                self.context = await auth._async_new_context(method.protocol, request, bindings)
                token = await auth._async_step(self.context, None, method.header, request)
            except httpx.HTTPError as exc:
                raise self.owner._error({}, "provider", str(exc)) from exc
            # NTLM's negotiate leg is always answered with a 407: do not upload the body.
            self.intermediate = _auth_module()._is_ntlm(self.context)
            self.sent = True
            return _header(method.header, token)
        if isinstance(auth, _Digest):
            if challenge is not None and not auth.learn(challenge):
                raise self.owner._error(
                    {"digest": challenge}, "unsupported_scheme", "its Digest challenge is unusable"
                )
            self.nonce = auth.nonce
            value = auth.header(self.request_method, self.target)
        else:
            value = _auth_header(auth.sync_auth_flow(self._request()))
        self.sent = value is not None
        return value

    async def after_407(self, offered: dict[str, str]) -> bytes | None:
        """The Proxy-Authorization of the next leg, after a 407 offering ``offered``."""
        owner = self.owner
        if not owner.configured:
            raise owner._error(
                offered,
                "no_credentials",
                "no proxy credentials were given; pass proxy_auth=NTLMAuth(user, password), "
                "NegotiateAuth() or httpx.BasicAuth(user, password) to ExClient, or "
                "proxy=httpx_extensions.Proxy(url, auth=...), or put the user and password "
                "in the proxy URL",
            )
        method = self.method
        if self.sent and method is not None:
            if self.context is not None and not self.context.complete:
                in_token = _token(offered.get(method.key))
                if in_token is not None:
                    assert _is_spnego(method.auth)
                    try:
                        token = await method.auth._async_step(
                            self.context, in_token, method.header, self._request()
                        )
                    except httpx.HTTPError as exc:
                        raise owner._error(offered, "provider", str(exc)) from exc
                    self.intermediate = False
                    self.mid_handshake = True
                    return _header(method.header, token)
            elif isinstance(method.auth, _Digest) and "digest" in offered:
                # A 407 to a header built from an older nonce (stale, or another request's
                # use raced ahead) earns one more try with the new one.
                fresh = offered["digest"]
                if method.auth.learn(fresh) and method.auth.nonce != self.nonce:
                    self.nonce = method.auth.nonce
                    return method.auth.header(self.request_method, self.target)
            raise owner._error(
                offered,
                "rejected",
                f"it rejected the {method.header} credentials (a wrong user name or password, "
                "or an account the proxy does not allow)",
            )
        chosen = owner._choose(offered)
        if chosen is None:
            raise owner._error(
                offered,
                "unsupported_scheme",
                f"the proxy credentials given ({_describe(owner._auth)}) can answer none of "
                "the schemes it offers",
            )
        owner._learnt = self.method = chosen
        return await self._start(offered.get("digest") if chosen.key == "digest" else None)

    async def finished(self, head: ResponseHead) -> None:
        method = self.method
        if method is None or method.protocol is None or self.context is None:
            return
        # Any answer but a 407 means the proxy took the credentials: an origin's 401 or 500
        # passed through it still leaves the proxy connection authenticated.
        in_token = _token(parse_challenges(head.headers).get(method.key))
        if in_token is not None and not self.context.complete:
            # Mutual authentication: the proxy's last token proves who it is.
            assert _is_spnego(method.auth)
            await method.auth._async_step(self.context, in_token, method.header, self._request())
        self.channel.authenticated = True


def _for_scheme(key: str, creds: _Credentials) -> _AnyAuth:
    if key == "ntlm":
        return typing.cast("_AnyAuth", _auth_module().NTLMAuth(creds.user, creds.password))
    if key in ("negotiate", "kerberos"):
        return typing.cast("_AnyAuth", _auth_module().NegotiateAuth(creds.user, creds.password))
    if key == "digest":
        return _Digest(creds.user, creds.password)
    return httpx.BasicAuth(creds.user, creds.password)


def _exchange_record(
    method: str, value: bytes | None, head: ResponseHead, leg: _Handshake
) -> dict[str, object]:
    """A proxy trace entry for one exchange: scheme and token sizes, never the tokens."""
    scheme = value.split(b" ", 1)[0].decode("ascii", "replace") if value else None
    sent = received = 0
    if value is not None and leg.bound_to_connection:
        sent = len(_token(value.decode("latin-1")) or b"")
        key = leg.method.key if leg.method is not None else ""
        received = len(_token(parse_challenges(head.headers).get(key)) or b"")
    return {
        "event": "exchange",
        "method": method,
        "scheme": scheme,
        "sent_bytes": sent,
        "status": head.status,
        "received_bytes": received,
    }


def _identity(auth: object) -> Hashable:
    if _is_spnego(auth):
        return auth._partition
    if isinstance(auth, _Credentials):
        digest = hashlib.sha256(auth.password.encode("utf-8")).hexdigest()[:16]
        return ("credentials", auth.user.casefold(), digest)
    return auth  # Basic/Digest objects: hashed by identity (one per transport anyway)


def _describe(auth: object) -> str:
    if isinstance(auth, _Credentials):
        return "a user and password"
    if isinstance(auth, _Digest):
        return "httpx.DigestAuth"
    # Not reachable: Basic goes with the first leg, so a 407 to it is a rejection, never
    # the failed choice of a scheme that describes the credentials. Kept for the wording.
    if isinstance(auth, httpx.BasicAuth):  # pragma: no cover - see above
        return "httpx.BasicAuth"
    return type(auth).__name__


def _display(key: str) -> str:
    return {"ntlm": "NTLM"}.get(key, key.capitalize())
