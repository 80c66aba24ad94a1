"""NTLM and Negotiate (Kerberos, SPNEGO) authentication on pyspnego, connection-aware.

Both classes are ``httpx.Auth`` generators with no I/O of their own. What makes them work under
concurrency is the pool below (see ``docs/pool.md``): one ``send()`` is a flow, so every leg of
a handshake goes out on the connection the first 401 came on. The auth also pins each leg to
that connection through ``extensions["conn_id"]``, and puts its requests in a pool *partition*
derived from its identity, so a connection authenticated for one identity is never handed to a
request of another identity or of none.

Handshake state lives in the flow's local variables, never on the auth object, so one instance
serves any number of concurrent requests. The only shared state is what the auth has learnt
about servers: which connections it has authenticated (to spot servers that re-challenge every
request) and which origins do that (to start the handshake at once there).

Nothing here logs a token, a password or an Authorization/WWW-Authenticate value: only scheme
names and token lengths.
"""

from __future__ import annotations

import abc
import base64
import binascii
import contextlib
import enum
import hashlib
import importlib
import logging
import re
import sys
import threading
import typing
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import spnego
import spnego.channel_bindings
import spnego.exceptions

from ._exceptions import AuthenticationError
from ._extensions import CONN_ID, PARTITION, PREEMPTIVE
from ._synchronization import async_run_blocking, sync_run_blocking

__all__ = ["AuthenticationError", "MutualAuth", "NTLMAuth", "NegotiateAuth"]

logger = logging.getLogger("httpx_extensions.auth")

# pyspnego logs whole tokens at DEBUG. Unless the application chose a level for its logger,
# keep it at INFO so that turning on DEBUG logging to look at this library leaks no token.
# Set where pyspnego is imported, before it can log a handshake: the package imports this
# module on first use of an auth name (httpx_extensions.__getattr__), not at its own import.
_spnego_logger = logging.getLogger("spnego")
if _spnego_logger.level == logging.NOTSET:
    _spnego_logger.setLevel(logging.INFO)

# Private diagnostic hook (used by ``httpx-extensions probe``): a request whose extensions
# hold a list under this key gets one dict appended per step of its handshake: the scheme
# chosen, the SPN, whether channel binding was sent, each exchange's status, conn_id and token
# sizes, the mechanism that completed. Never a token or a header value. Without the key a flow
# costs one dict lookup and a few `is None` tests, and records nothing.
_AUTH_TRACE = "httpx_extensions.auth_trace"

# How many authenticated conn_ids an auth remembers, to notice a server re-challenging them.
_REMEMBERED_CONNECTIONS = 4096
# How many NTLM template contexts (one per SPN host and channel binding) an auth keeps.
_NTLM_TEMPLATES = 64

_KERBEROS_EXTRA = 'pip install "httpx-extensions[kerberos]"'


class _RedactSpnegoTokens(logging.Filter):
    """pyspnego logs every token it steps, base64-encoded, at DEBUG (``NTLM step input:
    TlRMTVNT...``). Whoever turns its loggers to DEBUG, a run of base64 long enough to be a
    token (16+ characters with a digit, ``+`` or ``/`` in it) is replaced by its length."""

    _TOKEN = re.compile(r"(?=[A-Za-z]*[0-9+/])[A-Za-z0-9+/]{16,}={0,2}")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted shows no token either
            return True
        redacted = self._TOKEN.sub(lambda m: f"<{len(m.group())} characters redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# A filter on a logger does not see records propagated from its children, so every logger of
# pyspnego gets one: the modules that log tokens by name (they may not exist yet), and any
# other already created.
_REDACT_SPNEGO = _RedactSpnegoTokens()
for _name in {
    "spnego",
    "spnego._credssp",
    "spnego._gss",
    "spnego._negotiate",
    "spnego._ntlm",
    "spnego._sspi",
    *(name for name in logging.root.manager.loggerDict if name.startswith("spnego.")),
}:
    _spnego_child = logging.getLogger(_name)
    # Always true: this module body runs once, and only it makes _RedactSpnegoTokens filters.
    _filters = _spnego_child.filters
    if not any(isinstance(f, _RedactSpnegoTokens) for f in _filters):  # pragma: no branch
        _spnego_child.addFilter(_REDACT_SPNEGO)


class MutualAuth(str, enum.Enum):
    """What a handshake demands of the server's last token, as requests-kerberos' options.

    Only Kerberos proves the server's identity (the AP-REP in the final token); NTLM has no
    server token, so these apply to handshakes that end in Kerberos. Pass the enum or its
    string value.
    """

    #: A 2xx/3xx that completes a Kerberos handshake must carry a valid final token.
    REQUIRED = "required"
    #: A final token is checked when the server sends one; a missing one is accepted.
    OPTIONAL = "optional"
    #: The server's final token is ignored.
    DISABLED = "disabled"


def _mutual_auth(value: object) -> MutualAuth:
    try:
        return MutualAuth(value.lower() if isinstance(value, str) else value)
    except ValueError:
        raise ValueError(
            f"mutual_auth must be 'required', 'optional' or 'disabled' (or a MutualAuth), "
            f"not {value!r}"
        ) from None


def _spnego_neg_state(token: bytes) -> int | None:
    """The negState of an SPNEGO NegTokenResp (RFC 4178 4.2.2), None for any other token.

    ``NegTokenResp ::= [1] SEQUENCE { negState [0] ENUMERATED OPTIONAL, ... }``: DER
    ``A1 len 30 len A0 03 0A 01 state``. A reject is ``A1 07 30 05 A0 03 0A 01 02``.
    """
    position = 0
    for tag in (0xA1, 0x30, 0xA0):
        if position >= len(token) or token[position] != tag:
            return None
        position += 1
        if position >= len(token):
            return None
        length = token[position]
        # Short form, or long form with 1-4 length octets (skipped: only their count matters).
        position += 1 + (length - 0x80 if 0x80 < length <= 0x84 else 0)
    if token[position : position + 2] != b"\x0a\x01" or position + 2 >= len(token):
        return None
    return token[position + 2]


_REJECT = 2  # negState reject


def _gssapi_missing(protocol: str) -> bool:
    """Kerberos was wanted but python-gssapi cannot be imported (not installed, or broken)."""
    if protocol not in ("kerberos", "negotiate") or sys.platform == "win32":  # SSPI there
        return False
    try:
        importlib.import_module("gssapi")
    except ImportError:
        return True
    return False


class _Identity(typing.NamedTuple):
    """The pool partition of one identity; its repr never shows the password digest.

    A tuple, not a dataclass: the pool hashes a request's key several times per request,
    and a tuple's hash and equality run in C where a dataclass calls its Python __hash__.
    """

    scheme: str
    user: str
    secret: str
    # What the handshake may be: a connection that Negotiate authenticated through NTLM, or
    # without a delegated ticket, must not serve a request that refuses NTLM or needs one.
    policy: str = ""

    def __repr__(self) -> str:
        return f"_Identity(scheme={self.scheme!r}, user={self.user!r}, policy={self.policy!r})"


def _offered(response: httpx.Response) -> dict[str, bytes | None]:
    """Schemes in the WWW-Authenticate headers, mapped to their token (None when bare).

    Raises AuthenticationError for a token that is not base64.
    """
    offered: dict[str, bytes | None] = {}
    for value in response.headers.get_list("WWW-Authenticate"):
        for challenge in value.split(","):
            scheme, _, data = challenge.strip().partition(" ")
            key = scheme.lower()
            if key not in ("ntlm", "negotiate", "kerberos"):
                continue
            data = data.strip()
            if not data:
                offered.setdefault(key, None)
                continue
            try:
                offered[key] = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise AuthenticationError(
                    f"{scheme} challenge from {response.url.host} is not valid base64 "
                    f"({len(data)} characters)",
                    request=response.request,
                ) from exc
    return offered


def _rejection(context: spnego.ContextProxy, in_token: bytes | None) -> str | None:
    """Why a 401 to a handshake leg is the server's final no (None: it is the next leg)."""
    if in_token is None:
        return "401 without a token for the scheme"
    if _spnego_neg_state(in_token) == _REJECT:
        # Apache mod_auth_gssapi (MIT krb5's SPNEGO acceptor) ends a failed login so.
        return "SPNEGO reject token (negState=reject)"
    if context.complete:
        return "401 after the client finished its handshake"
    return None


T = TypeVar("T")


@dataclass(frozen=True)
class _Call:
    """A handshake step for the driver: a blocking provider call (a Kerberos ccache read,
    SSPI). The async driver runs it in a worker thread, the sync driver inline."""

    func: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class _Abandon:
    """A handshake step for the driver: close the connection of a server that failed mutual
    authentication.

    The server considers the connection authenticated: left in the pool, it would serve this
    identity's next requests with no handshake, so with no check of the server at all. A
    closed stream makes the pool drop the connection at its next pick.
    """

    response: httpx.Response


# What the handshake generators yield: a request to send (the flow's only), or a step.
_Item = httpx.Request | _Call | _Abandon
_Steps = Generator[_Call | _Abandon, Any, T]


async def _async_do(item: _Call | _Abandon) -> Any:
    if isinstance(item, _Call):
        return await async_run_blocking(item.func, *item.args)
    stream = item.response.extensions.get("network_stream")
    if stream is not None:
        with contextlib.suppress(Exception):  # already broken: nothing left to close
            await stream.aclose()
    return None


def _sync_do(item: _Call | _Abandon) -> Any:
    if isinstance(item, _Call):
        return sync_run_blocking(item.func, *item.args)
    stream = item.response.extensions.get("network_stream")
    if stream is not None:
        with contextlib.suppress(Exception):  # already broken: nothing left to close
            stream.close()
    return None


def _next_item(
    handshake: Generator[_Item, Any, None], value: Any, error: Exception | None
) -> _Item | None:
    """The handshake's next item, ``value`` sent or ``error`` thrown in; None once it ended."""
    try:
        return handshake.send(value) if error is None else handshake.throw(error)
    except StopIteration:
        return None


async def _async_advance(
    handshake: Generator[_Item, Any, None], result: httpx.Response | None
) -> httpx.Request | None:
    """Send ``result`` into the handshake and run its steps (calls in a worker thread) until
    it yields its next request, which is returned; None when it has ended."""
    value: Any = result
    error: Exception | None = None
    while True:
        item = _next_item(handshake, value, error)
        if item is None or isinstance(item, httpx.Request):
            return item
        value, error = None, None
        try:
            value = await _async_do(item)
        except Exception as exc:  # the handshake's to handle (it wraps them)
            error = exc


def _sync_advance(
    handshake: Generator[_Item, Any, None], result: httpx.Response | None
) -> httpx.Request | None:
    """:func:`_async_advance` with each step inline (we are a thread already)."""
    value: Any = result
    error: Exception | None = None
    while True:
        item = _next_item(handshake, value, error)
        if item is None or isinstance(item, httpx.Request):
            return item
        value, error = None, None
        try:
            value = _sync_do(item)
        except Exception as exc:  # the handshake's to handle (it wraps them)
            error = exc


async def _async_run(steps: _Steps[T]) -> T:
    """Drive ``steps`` to its return value, each step awaited (calls in a worker thread)."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            item = steps.send(result) if error is None else steps.throw(error)
        except StopIteration as stop:
            return typing.cast(T, stop.value)
        result, error = None, None
        try:
            result = await _async_do(item)
        except Exception as exc:  # the generator's to handle (it wraps provider errors)
            error = exc


def _sync_run(steps: _Steps[T]) -> T:
    """Drive ``steps`` to its return value, each step inline (we are a thread already)."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            item = steps.send(result) if error is None else steps.throw(error)
        except StopIteration as stop:
            return typing.cast(T, stop.value)
        result, error = None, None
        try:
            result = _sync_do(item)
        except Exception as exc:  # the generator's to handle (it wraps provider errors)
            error = exc


def _channel_bindings(response: httpx.Response) -> object | None:
    """RFC 5929 tls-server-end-point bindings from the certificate of this connection."""
    return _stream_bindings(response.extensions.get("network_stream"))


def _stream_bindings(stream: object | None) -> object | None:
    get_extra_info = getattr(stream, "get_extra_info", None)
    ssl_object = get_extra_info("ssl_object") if get_extra_info is not None else None
    if ssl_object is None:
        return None
    certificate = ssl_object.getpeercert(True)  # positional: C-level _SSLSocket takes no kwargs
    if not certificate:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from spnego.channel_bindings import GssChannelBindings

    algorithm = x509.load_der_x509_certificate(certificate).signature_hash_algorithm
    # RFC 5929 4.1: MD5 and SHA-1 certificates (and unknown ones) are hashed with SHA-256.
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        name = "sha256"
    else:
        name = algorithm.name
    digest = hashlib.new(name, certificate).digest()
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest)


class _SpnegoAuth(httpx.Auth, abc.ABC):
    """The handshake loop shared by NTLMAuth and NegotiateAuth."""

    requires_response_body = True  # a 401 left unread would close its connection
    _protocols: tuple[str, ...] = ()
    # ExClient and ExSyncClient drive the handshake themselves (_async_begin and
    # _async_advance, without the auth-flow generators below) unless a subclass changed
    # those generators: then they go through httpx's auth loop, which calls them.
    _client_driven = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._client_driven = (
            cls.async_auth_flow is _SpnegoAuth.async_auth_flow
            and cls.sync_auth_flow is _SpnegoAuth.sync_auth_flow
        )

    def __init__(
        self,
        username: str | None,
        password: str | None,
        *,
        service: str,
        hostname: str | None,
        channel_binding: bool,
        delegate: bool,
        mutual_auth: MutualAuth | str = MutualAuth.REQUIRED,
        preemptive: bool = False,
    ) -> None:
        if not isinstance(preemptive, bool):
            raise TypeError(f"preemptive must be True or False, not {preemptive!r}")
        self._mutual_auth = _mutual_auth(mutual_auth)
        self._preemptive = preemptive
        if (username is None) != (password is None) and password is not None:
            raise ValueError("a password was given without a username")
        if username is not None and not username.strip():
            raise ValueError("username must not be empty; pass None for the current user")
        self._username = username
        self._password = password
        self._service = service
        self._hostname = hostname
        self._channel_binding = channel_binding
        self._delegate = delegate
        secret = hashlib.sha256((password or "").encode("utf-8")).hexdigest()[:16]
        self._partition = _Identity(
            type(self).__name__, (username or "<current user>").casefold(), secret
        )
        # What the auth learns about servers, shared by every flow (and thread) using it;
        # changed under this lock. (Handshake state lives in each flow's locals.)
        self._lock = threading.Lock()
        self._authenticated: OrderedDict[int, None] = OrderedDict()
        self._rechallenging: set[str] = set()
        # NTLM with a password: spnego.client() derives the LM and NT hashes for every context
        # (the LM hash in pure-Python DES: most of a handshake's CPU). One template context per
        # (SPN host, bindings) keeps them; new_context() clones it with the hashes computed.
        self._ntlm_templates: OrderedDict[tuple[str, bytes | None], spnego.ContextProxy] = (
            OrderedDict()
        )

    def __repr__(self) -> str:
        user = self._username if self._username is not None else "<current user>"
        return f"{type(self).__name__}({user!r})"

    # The flow.

    # The drivers. The handshake itself is one generator (_handshake) that yields the requests
    # to send and the steps to run (a blocking provider call, closing a connection); the
    # async driver awaits the steps (calls in a worker thread), the sync driver runs them
    # inline. So ExClient and ExSyncClient share one handshake, and one auth object.

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        handshake, first = self._sync_begin(request)
        leg: httpx.Request | None = first
        try:
            while leg is not None:
                leg = _sync_advance(handshake, (yield leg))
        finally:
            handshake.close()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        handshake, first = await self._async_begin(request)
        leg: httpx.Request | None = first
        try:
            while leg is not None:
                leg = await _async_advance(handshake, (yield leg))
        finally:
            handshake.close()

    # What the clients call to drive a handshake (see _client_driven): begin, then advance
    # with each response until no request is left to send.

    async def _async_begin(
        self, request: httpx.Request
    ) -> tuple[Generator[_Item, Any, None], httpx.Request]:
        """The flow's handshake and its first request (``request`` itself)."""
        # A streamed body is read into memory so that the final leg can send it again.
        await request.aread()
        handshake = self._handshake(request, sync=False)
        leg = await _async_advance(handshake, None)
        assert leg is not None  # _handshake always sends something first, or raises
        return handshake, leg

    def _sync_begin(
        self, request: httpx.Request
    ) -> tuple[Generator[_Item, Any, None], httpx.Request]:
        request.read()
        handshake = self._handshake(request, sync=True)
        leg = _sync_advance(handshake, None)
        assert leg is not None  # _handshake always sends something first, or raises
        return handshake, leg

    _async_advance = staticmethod(_async_advance)
    _sync_advance = staticmethod(_sync_advance)

    # The flow.

    def _handshake(self, request: httpx.Request, *, sync: bool) -> Generator[_Item, Any, None]:
        request.extensions[PARTITION] = self._partition
        trace: list[dict[str, object]] | None = request.extensions.get(_AUTH_TRACE)
        # The origin is named only when needed: a server that re-challenges was seen, or
        # this request is challenged (it appears in errors and logs).
        origin = _origin(request.url) if self._rechallenging else ""
        bindings: object | None = None
        conn_id: int | None = None
        # The answer to a leg that went out before the loop (a preemptive first token).
        response: httpx.Response | None = None
        preempted: list[tuple[str, spnego.ContextProxy, bytes | None]] = []
        if origin in self._rechallenging and not (
            self._channel_binding and request.url.scheme == "https"
        ):
            # Preemptive: this server challenges every request. (Not on HTTPS with channel
            # binding: the binding needs the certificate of a connection we do not have yet.)
            scheme, protocol = self._preemptive_choice()
            if trace is not None:
                trace.append({"event": "choice", "scheme": scheme, "preemptive": True})
        else:
            if self._preemptive:
                # The transport calls this only if the request opens a new connection.
                request.extensions[PREEMPTIVE] = self._preempter(
                    request, preempted, trace, sync=sync
                )
            response = yield request
            if self._preemptive:
                request.extensions.pop(PREEMPTIVE, None)
            if preempted:
                scheme, context, token = preempted[0]
                origin = origin or _origin(request.url)
            else:
                if trace is not None:
                    trace.append(_exchange_record(response, None, b"", None))
                if response.status_code != 401:
                    if response.status_code < 400:
                        self._remember(response)
                    return
                origin = origin or _origin(request.url)
                conn_id = response.extensions.get(CONN_ID)
                if conn_id is not None and conn_id in self._authenticated:
                    with self._lock:
                        self._rechallenging.add(origin)
                    logger.debug(
                        "%s challenged an authenticated connection: going preemptive", origin
                    )
                choice = self._challenged(request, response, trace)
                if choice is None:
                    return  # none of our schemes offered: the 401 is the answer
                scheme, protocol, bindings = choice
                response = None
        if not preempted:
            if trace is not None:
                trace.append(self._context_record(protocol, request, bindings))
            context = yield from self._new_context(protocol, request, bindings)
            token = yield from self._step(context, None, scheme, request)
        first, restarted = not preempted, False
        for _ in range(8):  # NTLM needs 2 legs, Kerberos 1, SPNEGO at most 3 (+1 restart)
            if response is None:
                leg = self._leg(
                    request, scheme, token, conn_id, intermediate=first and _is_ntlm(context)
                )
                first = False
                response = yield leg
                if conn_id is not None and response.extensions.get(CONN_ID, conn_id) != conn_id:
                    # The leg went out on another connection: the one holding the handshake
                    # was closed, before the leg (a pin that could not be honoured) or as it
                    # went out (the transport resends a request lost on a reused
                    # connection). The new connection answers with a fresh challenge: start
                    # over there, once.
                    if restarted or response.status_code != 401:
                        raise AuthenticationError(
                            f"{scheme} handshake with {origin} was split: the server closed "
                            f"connection {conn_id} between legs, and a handshake cannot move "
                            "to another connection",
                            request=request,
                        )
                    restarted = first = True
                    logger.debug(
                        "%s handshake with %s lost conn_id %s: starting over on conn_id %s",
                        scheme,
                        origin,
                        conn_id,
                        response.extensions.get(CONN_ID),
                    )
                    conn_id = response.extensions.get(CONN_ID)
                    choice = self._challenged(request, response, trace)
                    if choice is None:
                        return
                    scheme, protocol, bindings = choice
                    if trace is not None:
                        trace.append(self._context_record(protocol, request, bindings))
                    context = yield from self._new_context(protocol, request, bindings)
                    token = yield from self._step(context, None, scheme, request)
                    response = None
                    continue
            conn_id = response.extensions.get(CONN_ID)
            offered = _offered(response)
            in_token = offered.get(scheme.lower())
            if trace is not None:
                trace.append(_exchange_record(response, scheme, token, in_token))
            if response.status_code != 401:
                if not (preempted and in_token is None):
                    yield from self._finish(context, in_token, scheme, request, response, origin)
                # else: a server that answers a preemptive token with no token of its own did
                # not authenticate (it needs no login there), as for an anonymous request.
                if trace is not None:
                    trace.append(
                        {
                            "event": "done",
                            "complete": context.complete,
                            "mechanism": _mechanism(context),
                        }
                    )
                if response.status_code < 400:
                    self._remember(response)
                return
            fresh = (
                self._challenged(request, response, trace)
                if preempted and in_token is None and self._choose(offered) is not None
                else None
            )
            if fresh is not None:
                # The server refused the preemptive token and offers schemes afresh (IIS in
                # kernel mode answers one on a new connection with 401.1; or the scheme we
                # opened with is not offered): the ordinary handshake on this connection, once.
                logger.debug("%s preemptive token refused by %s: starting over", scheme, origin)
                preempted.clear()
                scheme, protocol, bindings = fresh
                if trace is not None:
                    trace.append(self._context_record(protocol, request, bindings))
                context = yield from self._new_context(protocol, request, bindings)
                token = yield from self._step(context, None, scheme, request)
                first, response = True, None
                continue
            preempted.clear()
            rejected = _rejection(context, in_token)
            if rejected is not None:
                mechanism = _mechanism(context)
                logger.debug(
                    "%s credentials rejected by %s (mechanism %s): %s",
                    scheme,
                    origin,
                    mechanism,
                    rejected,
                )
                if trace is not None:
                    trace.append({"event": "rejected", "mechanism": mechanism, "reason": rejected})
                return  # a rejected login: the final 401 is returned, once
            _carry_cookies(request, response)
            token = yield from self._step(context, in_token, scheme, request)
            response = None
        # A guard against a server that never lets a handshake end. Not reachable from a test:
        # pyspnego's contexts finish (NTLM in 2 legs, Kerberos in 1, SPNEGO in 3) or raise on a
        # token past their end, and each restart above happens at most once.
        raise AuthenticationError(  # pragma: no cover - see above
            f"{scheme} handshake with {origin} did not finish after 8 legs", request=request
        )

    def _challenged(
        self,
        request: httpx.Request,
        response: httpx.Response,
        trace: list[dict[str, object]] | None,
    ) -> tuple[str, str, object | None] | None:
        """(scheme, protocol, channel bindings) to answer a 401 with, or None for none."""
        choice = self._choose(_offered(response))
        if choice is None:
            if trace is not None:
                trace.append({"event": "no_scheme"})
            return None
        scheme, protocol = choice
        _carry_cookies(request, response)
        if trace is not None:
            trace.append({"event": "choice", "scheme": scheme, "preemptive": False})
        bindings = _channel_bindings(response) if self._channel_binding else None
        return scheme, protocol, bindings

    def _context_record(
        self, protocol: str, request: httpx.Request, bindings: object | None
    ) -> dict[str, object]:
        return {
            "event": "context",
            "protocol": protocol,
            "spn": f"{self._service}/{self._hostname or request.url.host}",
            "channel_binding": bindings is not None,
        }

    def _preempter(
        self,
        request: httpx.Request,
        preempted: list[tuple[str, spnego.ContextProxy, bytes | None]],
        trace: list[dict[str, object]] | None,
        *,
        sync: bool,
    ) -> Callable[[httpx.Request, object], Any]:
        """The ``PREEMPTIVE`` hook: the first token, made once the new connection is open.

        The transport calls it after the TCP and TLS handshakes, so on HTTPS the channel
        binding comes from the certificate of the very connection the token goes out on.
        What it made goes into ``preempted`` for the flow to carry on with. A coroutine
        function for the async transport, a plain one for the sync transport (``sync``).
        """

        def steps(sending: httpx.Request, stream: object) -> _Steps[list[tuple[bytes, bytes]]]:
            if sending is not request or preempted:
                # A redirect httpx built from this request (another URL, maybe another
                # host): the token is for this one only. Nor twice for one request.
                return []
            scheme, protocol = self._preemptive_choice()
            bindings = _stream_bindings(stream) if self._channel_binding else None
            if trace is not None:
                trace.append({"event": "choice", "scheme": scheme, "preemptive": True})
                trace.append(self._context_record(protocol, request, bindings))
            context = yield from self._new_context(protocol, request, bindings)
            token = yield from self._step(context, None, scheme, request)
            preempted.append((scheme, context, token))
            value = f"{scheme} {base64.b64encode(token or b'').decode()}"
            request.headers["Authorization"] = value  # what response.request shows
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s preemptive: %d-byte token on a new connection", scheme, len(token or b"")
                )
            return [(b"Authorization", value.encode("ascii"))]

        if sync:

            def preempt_sync(sending: httpx.Request, stream: object) -> list[tuple[bytes, bytes]]:
                return _sync_run(steps(sending, stream))

            return preempt_sync

        async def preempt(sending: httpx.Request, stream: object) -> list[tuple[bytes, bytes]]:
            return await _async_run(steps(sending, stream))

        return preempt

    def _finish(
        self,
        context: spnego.ContextProxy,
        in_token: bytes | None,
        scheme: str,
        request: httpx.Request,
        response: httpx.Response,
        origin: str,
    ) -> _Steps[None]:
        """Mutual authentication on the response that ended the handshake (not a 401)."""
        if self._mutual_auth is MutualAuth.DISABLED:
            return
        if in_token and not context.complete:
            try:
                yield from self._step(context, in_token, scheme, request)
            except AuthenticationError as exc:
                yield _Abandon(response)
                raise AuthenticationError(
                    f"{scheme} mutual authentication with {origin} failed: the server's "
                    f"final token does not prove its identity ({exc})",
                    request=request,
                ) from exc.__cause__
        if context.complete or _is_ntlm(context):
            return  # proven, or NTLM, which has no server token (see MutualAuth)
        if in_token:
            problem = "carried a final token that did not complete the handshake"
        elif self._mutual_auth is MutualAuth.REQUIRED and response.status_code < 400:
            problem = "carried no final token to prove its identity"
        else:
            return  # optional: no token, no proof asked for; or an error status
        yield _Abandon(response)
        raise AuthenticationError(
            f"{scheme} mutual authentication with {origin} failed: the server's "
            f"{response.status_code} {problem} (mutual_auth={self._mutual_auth.value!r}; "
            "'optional' accepts a missing token, 'disabled' skips the check)",
            request=request,
        )

    def _leg(
        self,
        request: httpx.Request,
        scheme: str,
        token: bytes | None,
        conn_id: int | None,
        *,
        intermediate: bool,
    ) -> httpx.Request:
        if intermediate and (
            request.headers.get("Content-Length", "0") != "0"
            or "Transfer-Encoding" in request.headers
        ):
            # The server answers this leg with 401 whatever it carries: do not upload the body
            # twice (curl does the same).
            headers = httpx.Headers(request.headers)
            headers.pop("Transfer-Encoding", None)
            headers["Content-Length"] = "0"
            leg = httpx.Request(
                request.method, request.url, headers=headers, extensions=dict(request.extensions)
            )
        else:
            leg = request
        leg.headers["Authorization"] = f"{scheme} {base64.b64encode(token or b'').decode()}"
        if conn_id is not None:
            leg.extensions[CONN_ID] = conn_id
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s leg: %d-byte token on conn_id %s", scheme, len(token or b""), conn_id)
        return leg

    @abc.abstractmethod
    def _choose(self, offered: dict[str, bytes | None]) -> tuple[str, str] | None:
        """(header scheme, pyspnego protocol) for the schemes a 401 offered, or None."""

    @abc.abstractmethod
    def _preemptive_choice(self) -> tuple[str, str]:
        """(header scheme, pyspnego protocol) to open with on servers that re-challenge."""

    def _new_context(
        self, protocol: str, request: httpx.Request, bindings: object | None
    ) -> _Steps[spnego.ContextProxy]:
        hostname = self._hostname or request.url.host
        context_req = spnego.ContextReq.default
        if self._delegate:
            context_req |= spnego.ContextReq.delegate
        cbt = bindings if isinstance(bindings, spnego.channel_bindings.GssChannelBindings) else None

        def create() -> spnego.ContextProxy:
            return spnego.client(
                self._username,
                self._password,
                hostname=hostname,
                service=self._service,
                channel_bindings=cbt,
                context_req=context_req,
                protocol=protocol,
            )

        try:
            if protocol == "ntlm" and self._password is None:
                return create()  # NTLM_USER_FILE: re-read for every context, as pyspnego does
            if protocol == "ntlm":
                key = (hostname, cbt.pack() if cbt is not None else None)
                with self._lock:  # one template per key, whichever thread comes first
                    template = self._ntlm_templates.get(key)
                    if template is None:
                        template = self._ntlm_templates[key] = create()
                        if len(self._ntlm_templates) > _NTLM_TEMPLATES:
                            self._ntlm_templates.popitem(last=False)
                    else:
                        self._ntlm_templates.move_to_end(key)
                    return template.new_context()
            context: spnego.ContextProxy = yield _Call(create)  # may read a ccache, call SSPI
            return context
        except Exception as exc:
            if _gssapi_missing(protocol):
                raise AuthenticationError(
                    f"could not set up {protocol} for {request.url.host}: Kerberos needs the "
                    f"gssapi package, which is not installed; install it with {_KERBEROS_EXTRA}",
                    request=request,
                ) from exc
            # SpnegoError, and also krb5.Krb5Error, which pyspnego lets through when it gets a
            # TGT for an explicit password (wrong password, unknown user, KDC unreachable).
            reason = exc.message if isinstance(exc, spnego.exceptions.SpnegoError) else exc
            raise AuthenticationError(
                f"could not set up {protocol} for {request.url.host}: {reason}", request=request
            ) from exc

    async def _async_new_context(
        self, protocol: str, request: httpx.Request, bindings: object | None
    ) -> spnego.ContextProxy:
        """:meth:`_new_context` driven to its end (for the proxy authenticator)."""
        return await _async_run(self._new_context(protocol, request, bindings))

    def _sync_new_context(
        self, protocol: str, request: httpx.Request, bindings: object | None
    ) -> spnego.ContextProxy:
        return _sync_run(self._new_context(protocol, request, bindings))

    async def _async_step(
        self,
        context: spnego.ContextProxy,
        in_token: bytes | None,
        scheme: str,
        request: httpx.Request,
    ) -> bytes | None:
        """:meth:`_step` driven to its end (for the proxy authenticator)."""
        return await _async_run(self._step(context, in_token, scheme, request))

    def _sync_step(
        self,
        context: spnego.ContextProxy,
        in_token: bytes | None,
        scheme: str,
        request: httpx.Request,
    ) -> bytes | None:
        return _sync_run(self._step(context, in_token, scheme, request))

    def _step(
        self,
        context: spnego.ContextProxy,
        in_token: bytes | None,
        scheme: str,
        request: httpx.Request,
    ) -> _Steps[bytes | None]:
        try:
            if _is_ntlm(context):
                return context.step(in_token)
            token: bytes | None = yield _Call(context.step, (in_token,))
            return token
        except spnego.exceptions.SpnegoError as exc:
            if in_token is None and _gssapi_missing(getattr(context, "protocol", "")):
                # Without gssapi, pyspnego's Negotiate has only NTLM, and with no NTLM
                # credentials it blames the "credential cache": say what is really missing.
                raise AuthenticationError(
                    f"{scheme} for {request.url.host} needs Kerberos, but the gssapi package "
                    f"is not installed: install it with {_KERBEROS_EXTRA} (the NTLM fallback "
                    "needs an explicit username and password)",
                    request=request,
                ) from exc
            raise AuthenticationError(
                f"{scheme} handshake with {request.url.host} failed: {exc.message}",
                request=request,
            ) from exc
        except Exception as exc:
            # Not reachable from a test: pyspnego wraps what a first step raises in SpnegoError
            # (handled above); anything else is a bug of ours or of pyspnego, raised as it is.
            # (The pragma is on the raise alone: the test itself runs for every malformed token.)
            if in_token is None:
                raise  # pragma: no cover - see above
            # pyspnego's parsers raise whatever the bytes provoke (KeyError, struct.error,
            # ValueError, ...) on a malformed token: it came from the server.
            raise AuthenticationError(
                f"{scheme} token from {request.url.host} is malformed or truncated "
                f"({len(in_token or b'')} bytes)",
                request=request,
            ) from exc

    def _remember(self, response: httpx.Response) -> None:
        conn_id = response.extensions.get(CONN_ID)
        if conn_id is None:
            return
        with self._lock:
            self._authenticated[conn_id] = None
            self._authenticated.move_to_end(conn_id)
            if len(self._authenticated) > _REMEMBERED_CONNECTIONS:
                self._authenticated.popitem(last=False)


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


def _carry_cookies(request: httpx.Request, response: httpx.Response) -> None:
    """Cookies a challenge sets go out with the next leg of the handshake.

    httpx builds a request's ``Cookie`` header once, so the legs of an auth flow would not
    carry cookies set by a 401. A load balancer with cookie affinity (IIS ARR, F5) sets one
    on the first 401 and needs it on the next leg to reach the server holding the handshake.
    """
    if "set-cookie" not in response.headers:
        return
    jar = httpx.Cookies()
    jar.extract_cookies(response)
    fresh = httpx.Request(request.method, request.url)
    jar.set_cookie_header(fresh)  # only what applies to this URL (domain, path, secure)
    added = fresh.headers.get("Cookie")
    if not added:
        return
    pairs: dict[str, str | None] = {}
    for header in (request.headers.get("Cookie"), added):
        for part in (header or "").split(";"):
            name, sep, value = part.strip().partition("=")
            if name:
                # A cookie set by the challenge replaces an older value of the same name.
                pairs[name] = value if sep else None
    request.headers["Cookie"] = "; ".join(
        name if value is None else f"{name}={value}" for name, value in pairs.items()
    )


def _mechanism(context: spnego.ContextProxy) -> str | None:
    """The mechanism a context negotiated ("ntlm", "kerberos"), None while not yet known."""
    try:
        return context.negotiated_protocol
    # Windows only: SSPI queries its context and may raise before one is negotiated;
    # pyspnego's NTLM, GSSAPI and Negotiate contexts answer None or their name.
    except Exception:  # pragma: no cover - SSPI (Windows) only, see above
        return None


def _is_ntlm(context: spnego.ContextProxy) -> bool:
    try:
        return context.negotiated_protocol == "ntlm"
    except Exception:  # pragma: no cover - SSPI (Windows) only, as in _mechanism
        return False


def _exchange_record(
    response: httpx.Response, scheme: str | None, sent: bytes | None, received: bytes | None
) -> dict[str, object]:
    """An auth trace entry for one exchange: sizes of the tokens, never the tokens."""
    return {
        "event": "exchange",
        "scheme": scheme,
        "sent_bytes": len(sent or b""),
        "status": response.status_code,
        "conn_id": response.extensions.get(CONN_ID),
        "received_bytes": len(received or b""),
    }


class NTLMAuth(_SpnegoAuth):
    """NTLM authentication, as IIS and Windows proxies speak it.

    Args:
        username: ``"DOMAIN\\user"`` or ``"user@domain"``.
        password: The password.
        channel_binding: On HTTPS, bind the handshake to the server's certificate
            (tls-server-end-point, RFC 5929), as IIS Extended Protection requires.
        mutual_auth: ``"disabled"`` (default) or ``"optional"``, which are the same for
            NTLM: it has no server token, so the server's identity cannot be proven, and
            ``"required"`` is refused. Use ``NegotiateAuth(..., allow_ntlm=False)`` for
            Kerberos mutual authentication.
        preemptive: Send the NTLM NEGOTIATE message with the first request on each *new*
            connection, instead of waiting for the server's 401 (saves one round trip per
            connection; connections already authenticated are reused without a token).

    The handshake runs on one connection (the ExClient pool guarantees it); afterwards the
    connection stays authenticated, and later requests on it need one round trip. Servers that
    re-challenge every request are detected and then served with an immediate handshake.

    Raises:
        TypeError: ``username`` or ``password`` is not a string, or ``preemptive`` not a bool.
        ValueError: ``mutual_auth`` is ``"required"`` or not one of the choices.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        channel_binding: bool = True,
        mutual_auth: MutualAuth | str = MutualAuth.DISABLED,
        preemptive: bool = False,
    ) -> None:
        if not isinstance(username, str) or not isinstance(password, str):
            raise TypeError("NTLMAuth(username, password) takes two strings")
        if _mutual_auth(mutual_auth) is MutualAuth.REQUIRED:
            raise ValueError(
                "NTLMAuth(mutual_auth='required') can never be met: NTLM does not authenticate "
                "the server. Use NegotiateAuth(..., allow_ntlm=False) for Kerberos mutual "
                "authentication, or leave mutual_auth at 'disabled'"
            )
        super().__init__(
            username,
            password,
            service="HTTP",
            hostname=None,
            channel_binding=channel_binding,
            delegate=False,
            mutual_auth=mutual_auth,
            preemptive=preemptive,
        )

    def _choose(self, offered: dict[str, bytes | None]) -> tuple[str, str] | None:
        if "ntlm" in offered:
            return "NTLM", "ntlm"
        if "negotiate" in offered:
            return "Negotiate", "ntlm"  # IIS accepts raw NTLM tokens under Negotiate
        return None

    def _preemptive_choice(self) -> tuple[str, str]:
        return "NTLM", "ntlm"


class NegotiateAuth(_SpnegoAuth):
    """Negotiate (SPNEGO): Kerberos, falling back to NTLM unless told not to.

    Args:
        username: ``None`` for the current user (Windows logon session through SSPI; the
            Kerberos ccache, ``KRB5CCNAME``, on Linux and macOS), or ``"user@REALM"`` /
            ``"DOMAIN\\user"``.
        password: ``None`` to use the cached credentials of ``username``.
        service: Service class of the SPN (``HTTP/host``).
        hostname: Host of the SPN, when it differs from the URL's (a CNAME, an IP address).
        allow_ntlm: ``False`` to refuse NTLM: only Kerberos is tried.
        delegate: Ask for a delegable (forwardable) ticket.
        channel_binding: On HTTPS, bind to the server certificate (RFC 5929).
        mutual_auth: How the server's final Kerberos token (its AP-REP, proof of its
            identity) is checked, as requests-kerberos: ``"required"`` (default: a 2xx or
            3xx that ends a Kerberos handshake without a valid final token raises
            AuthenticationError), ``"optional"`` (checked when present), ``"disabled"``
            (ignored). A :class:`MutualAuth` or its string. It applies to Kerberos only: an
            NTLM fallback has no server token; ``allow_ntlm=False`` makes it strict.
        preemptive: Send the first token (the Kerberos AP-REQ, or the NTLM NEGOTIATE
            message) with the first request on each *new* connection, instead of waiting
            for the server's 401: one round trip less per connection. Connections already
            authenticated for this identity are reused without a token. Needs ExClient's
            pool (other transports never see a new connection: the option does nothing
            there). IIS in kernel mode answers such a request with 401.1; the ordinary
            handshake then runs on that connection, costing a round trip more than without.

    Raises:
        ValueError: ``mutual_auth`` is not one of its choices, a password is given without
            a username, or the username is empty.
        TypeError: ``preemptive`` is not a bool.
    """

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        service: str = "HTTP",
        hostname: str | None = None,
        allow_ntlm: bool = True,
        delegate: bool = False,
        channel_binding: bool = True,
        mutual_auth: MutualAuth | str = MutualAuth.REQUIRED,
        preemptive: bool = False,
    ) -> None:
        super().__init__(
            username,
            password,
            service=service,
            hostname=hostname,
            channel_binding=channel_binding,
            delegate=delegate,
            mutual_auth=mutual_auth,
            preemptive=preemptive,
        )
        self._allow_ntlm = allow_ntlm
        self._partition = self._partition._replace(
            policy=f"allow_ntlm={allow_ntlm},delegate={delegate}"
        )

    def _choose(self, offered: dict[str, bytes | None]) -> tuple[str, str] | None:
        if "negotiate" in offered:
            return "Negotiate", "negotiate" if self._allow_ntlm else "kerberos"
        if "kerberos" in offered:
            return "Kerberos", "kerberos"
        if "ntlm" in offered and self._allow_ntlm:
            return "NTLM", "ntlm"
        return None

    def _preemptive_choice(self) -> tuple[str, str]:
        return "Negotiate", "negotiate" if self._allow_ntlm else "kerberos"
