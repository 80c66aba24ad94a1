"""An IIS-like HTTP server protected by Windows-integrated auth (NTLM and Negotiate).

Why a real protocol peer: NTLM and NTLM-in-SPNEGO are bound to the TCP connection, and a
client only gets them right if every leg of a handshake goes out on the connection that
received the challenge.  A mock that accepts any token would not notice a type 3 message
sent on the wrong connection, a missing channel binding, or a final SPNEGO token the client
forgot to process.  This server steps a real pyspnego *acceptor* with the client's tokens,
one acceptor per TCP connection, and answers the way IIS does.

The server runs an asyncio loop in a daemon thread (see ``_loopback.py``), so asyncio and
trio clients can both drive it from synchronous fixtures.

Credentials come from an ``NTLM_USER_FILE`` file (``DOMAIN:USER:PASSWORD`` lines, UTF-8),
which is the only credential store pyspnego's NTLM acceptor supports.  pyspnego reads the
environment variable when an acceptor is created *and* again for every type 3 message, so
the variable must point at the file for as long as the server runs; see :class:`_UserFileEnv`.

Tokens are secrets in the protocol sense and noise in a test report: the server records
only their lengths, and it silences pyspnego's DEBUG logging of tokens on its own thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
import ssl
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import h11
import spnego
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from spnego.channel_bindings import GssChannelBindings

from ._loopback import Exchange, KeepAliveServer, reason_phrase

USER_FILE_ENV = "NTLM_USER_FILE"

_NTLM_SIGNATURE = b"NTLMSSP\x00"
_MSV_AV_EOL = 0x0000
_MSV_AV_CHANNEL_BINDINGS = 0x000A
# The ASN.1 [APPLICATION 0] tag that starts a GSS InitialContextToken (SPNEGO NegTokenInit).
_SPNEGO_INIT_TAG = 0x60
# MIT krb5 >= 1.19 sets this in the acceptor's ret_flags when the initiator's channel bindings
# matched the acceptor's (non-empty) ones; a missing binding is accepted without the flag.
_GSS_C_CHANNEL_BOUND_FLAG = 0x800
# What Apache mod_auth_gssapi (through MIT krb5's SPNEGO acceptor) answers a failed Negotiate
# login with: a NegTokenResp whose only field is negState = reject (RFC 4178 4.2.2), DER:
#   A1 07          [1] NegTokenResp, 7 bytes
#     30 05        SEQUENCE, 5 bytes
#       A0 03      [0] negState, 3 bytes
#         0A 01 02 ENUMERATED reject (2)
# On the wire: ``WWW-Authenticate: Negotiate oQcwBaADCgEC`` on the final 401.
_SPNEGO_REJECT_TOKEN = bytes.fromhex("a1073005a0030a0102")
_FINAL_TOKEN_MODES = ("send", "omit", "corrupt")

# IIS answers a 401 with an HTML page; a non-empty body makes clients prove they drain the
# 401 before sending the next leg on the same connection.
_UNAUTHORIZED_BODY = (
    b"<!DOCTYPE html><html><head><title>401 - Unauthorized</title></head>"
    b"<body><h1>401 - Unauthorized: Access is denied due to invalid credentials.</h1>"
    b"</body></html>"
)

_AcceptorServerT = TypeVar("_AcceptorServerT", bound="_AcceptorServer[Any]")
_RecordT = TypeVar("_RecordT")


# -- credentials ---------------------------------------------------------------------------


def write_user_file(
    path: str | os.PathLike[str],
    users: Iterable[tuple[str, str, str]],
    *,
    store_hashes: bool = False,
) -> Path:
    """Write the credential file an :class:`IISLikeServer` accepts logons from.

    The format is pyspnego's ``NTLM_USER_FILE``: one ``DOMAIN:USER:PASSWORD`` line per user,
    UTF-8 (how pyspnego decodes it), so non-ASCII names and passwords work.

    Args:
        path: Where to write the file. An existing file is replaced.
        users: ``(domain, user, password)`` triples. Use ``""`` as the domain for a user
            that logs on without one (``zoë``) or in UPN form (``alice@example.com``).
        store_hashes: Write the smbpasswd form (``DOMAIN\\USER:0:LM:NT:[U]:LCT-0``) with
            precomputed hashes instead of passwords. pyspnego re-reads the file for every
            type 3 message and, for a password line, recomputes the LM hash with
            pure-Python DES: about two thirds of the acceptor's CPU time. Precomputed
            hashes make a load test with thousands of handshakes ~4x cheaper on the server
            side; logons behave the same.

    Returns:
        The path written, as a :class:`~pathlib.Path`.

    Raises:
        ValueError: A field contains ``:`` or a line break, a user name is empty, or the
            user is given as ``DOMAIN\\user`` (pass the domain as its own field). pyspnego
            silently skips a line that does not split into exactly three fields, which would
            turn a typo into a baffling logon failure, so such input is refused here.
    """
    path = Path(path)
    lines = []
    for domain, user, password in users:
        for name, value in (("domain", domain), ("user", user), ("password", password)):
            if any(ch in value for ch in ":\r\n"):
                raise ValueError(f"{name} {value!r} cannot contain ':' or a line break")
        if "\\" in user or "\\" in domain:
            raise ValueError("pass the domain as its own field, not as DOMAIN\\user")
        if not user:
            raise ValueError("empty user name")
        if store_hashes:
            # The hashes pyspnego itself uses (a private module of pyspnego: imported here
            # so that a pyspnego that moves it breaks only this option).
            from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

            account = f"{domain}\\{user}" if domain else user
            lm_hash = lmowfv1(password).hex().upper()
            nt_hash = ntowfv1(password).hex().upper()
            lines.append(f"{account}:0:{lm_hash}:{nt_hash}:[U]:LCT-00000000\n")
        else:
            lines.append(f"{domain}:{user}:{password}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


class _UserFileEnv:
    """Process-wide ownership of ``NTLM_USER_FILE`` while servers run.

    Environment variables are shared by every thread, and pyspnego re-reads this one for
    each type 3 message, so two servers with different files cannot run at once.  Servers
    using the same file share it (reference counted); the previous value is restored when
    the last one stops.
    """

    _lock = threading.Lock()
    _path: str | None = None
    _count = 0
    _saved: str | None = None

    @classmethod
    def acquire(cls, path: Path) -> None:
        value = str(path.resolve())
        with cls._lock:
            if cls._count and cls._path != value:
                raise RuntimeError(
                    f"{USER_FILE_ENV} is process-wide and another IISLikeServer or AuthProxy is "
                    "running with a different user file; stop it first or share the file"
                )
            if cls._count == 0:
                cls._saved = os.environ.get(USER_FILE_ENV)
                os.environ[USER_FILE_ENV] = value
                cls._path = value
            cls._count += 1

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._count -= 1
            if cls._count == 0:
                if cls._saved is None:
                    os.environ.pop(USER_FILE_ENV, None)
                else:
                    os.environ[USER_FILE_ENV] = cls._saved
                cls._path = cls._saved = None


class _DropThreadRecords(logging.Filter):
    """Drop log records emitted on the server threads.

    pyspnego logs every input and output token in base64 at DEBUG
    (``NTLM step input: ...``).  A client test that turns DEBUG on to prove the client
    never logs tokens would otherwise see the server's.  Records from other threads (the
    client's own pyspnego contexts) pass untouched.
    """

    def __init__(self) -> None:
        super().__init__()
        self.thread_ids: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread not in self.thread_ids


_TOKEN_LOG_FILTER = _DropThreadRecords()
# Filters on a logger do not apply to records propagated from its children, so each module
# logger that logs tokens gets the filter.
for _name in ("spnego._ntlm", "spnego._negotiate", "spnego._gss", "spnego._sspi"):
    logging.getLogger(_name).addFilter(_TOKEN_LOG_FILTER)


# -- channel bindings ----------------------------------------------------------------------


def tls_server_end_point(certificate_der: bytes) -> bytes:
    """The RFC 5929 ``tls-server-end-point`` hash of a server certificate.

    The hash is the certificate's signature hash, except that MD5 and SHA-1 are replaced
    by SHA-256.  RFC 5929 leaves signature schemes without a separate hash (Ed25519)
    undefined; SHA-256 is used there too, as most implementations do.

    Args:
        certificate_der: The certificate, DER-encoded (``ssl_object.getpeercert(True)``).

    Returns:
        The digest bytes.

    Raises:
        ValueError: ``certificate_der`` is not a DER certificate.
    """
    certificate = x509.load_der_x509_certificate(certificate_der)
    try:
        algorithm = certificate.signature_hash_algorithm
    # A signature algorithm cryptography cannot name a hash for; it cannot make such a
    # certificate either, so no test has one.
    except UnsupportedAlgorithm:  # pragma: no cover - no such certificate can be made here
        algorithm = None
    if algorithm is None or isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate_der)
    return digest.finalize()


def channel_bindings_for(certificate_der: bytes) -> GssChannelBindings:
    """The channel bindings an HTTPS client and server derive from the server certificate.

    Args:
        certificate_der: The server certificate, DER-encoded.

    Returns:
        ``GssChannelBindings(application_data=b"tls-server-end-point:" + hash)``, what
        ``spnego.client(..., channel_bindings=...)`` and an acceptor's ``step()`` take.

    Raises:
        ValueError: ``certificate_der`` is not a DER certificate.
    """
    return GssChannelBindings(
        application_data=b"tls-server-end-point:" + tls_server_end_point(certificate_der)
    )


def _served_certificate(context: ssl.SSLContext) -> bytes:
    """DER of the certificate ``context`` presents, found by a TLS handshake in memory.

    An ``SSLContext`` does not expose its own certificate, and a handshake over a real
    socket would show up in the connection counters; memory BIOs avoid both.
    """
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = context.wrap_bio(s_in, s_out, server_side=True)
    failure: ssl.SSLError | None = None
    for _ in range(8):  # pragma: no branch - two or three rounds finish or fail it
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:  # the server's alert: it has no certificate to present
            failure = exc
            break
        else:
            der = client.getpeercert(binary_form=True)
            if der:
                return der
            break  # pragma: no cover - a finished handshake shows the server's certificate
        s_in.write(c_out.read())
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            server.do_handshake()
        c_in.write(s_out.read())
    raise ValueError(
        "could not obtain the certificate served by ssl_context (is its certificate chain loaded?)"
    ) from failure


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


# -- NTLM message inspection (diagnostics only; pyspnego does the real parsing) --------------


def _ntlm_message(token: bytes) -> bytes | None:
    """The NTLM message inside a raw or SPNEGO-wrapped token, from its signature on.

    NTLM fields are addressed by offsets from the signature, and SPNEGO carries the
    message as one contiguous OCTET STRING, so slicing at the signature is enough.
    """
    index = token.find(_NTLM_SIGNATURE)
    return token[index:] if index >= 0 else None


def ntlm_message_type(token: bytes) -> int | None:
    """The type of the NTLM message in a raw or SPNEGO-wrapped token.

    Args:
        token: A decoded (not base64) NTLM or SPNEGO token.

    Returns:
        1 (NEGOTIATE), 2 (CHALLENGE) or 3 (AUTHENTICATE); None when the token carries no
        NTLM message (Kerberos, garbage).
    """
    message = _ntlm_message(token)
    if message is None or len(message) < 12:
        return None
    return int(struct.unpack_from("<I", message, 8)[0])


def _kerberos_channel_bound(context: spnego.ContextProxy) -> bool:
    """Whether the GSSAPI acceptor under ``context`` verified the client's channel bindings.

    pyspnego does not expose GSS_C_CHANNEL_BOUND_FLAG, so this walks its (private) wrapper
    chain, NegotiateProxy -> GSSAPIProxy -> gssapi.SecurityContext, to the ret_flags.
    """
    inner: Any = context
    for _ in range(4):
        flags = getattr(inner, "actual_flags", None)
        if flags is not None:
            return bool(int(flags) & _GSS_C_CHANNEL_BOUND_FLAG)
        inner = getattr(inner, "_context", None)
        # pyspnego's Kerberos contexts all reach gssapi's within the four steps.
        if inner is None:  # pragma: no cover - a pyspnego layout this was not written for
            break
    return False  # pragma: no cover - as above


def _client_channel_binding(message: bytes) -> bytes | None:
    """MsvAvChannelBindings (an MD5 of the bindings) from an AUTHENTICATE message, if any.

    The AV pairs sit in the NTLMv2 response after the 16-byte NTProofStr and the 28-byte
    fixed part of NTLMv2_CLIENT_CHALLENGE; NTLMv1 responses (24 bytes) have none.
    """
    try:
        nt_length, _, nt_offset = struct.unpack_from("<HHI", message, 20)
        response = message[nt_offset : nt_offset + nt_length]
        position = 16 + 28
        while position + 4 <= len(response):
            av_id, av_length = struct.unpack_from("<HH", response, position)
            position += 4
            if av_id == _MSV_AV_EOL:
                break
            if av_id == _MSV_AV_CHANNEL_BINDINGS:
                return bytes(response[position : position + av_length])
            position += av_length
    except struct.error:
        return None
    return None


# -- records and per-connection state ------------------------------------------------------


@dataclass(frozen=True)
class NTLMRequestRecord:
    """One HTTP exchange as an :class:`IISLikeServer` saw it, 401 legs included.

    Attributes:
        conn_seq: The server's serial number of the TCP connection (also sent to the client
            as the ``X-Conn-Seq`` response header).
        method: The request method.
        path: The request target, query string included.
        scheme: The scheme word of the request's ``Authorization`` header (``"NTLM"``,
            ``"Negotiate"``, another word), or None for a request without one.
        status: The status code answered (401 or 200).
        user: The user the request was served as (``DOMAIN\\user`` spelled as the client
            sent it, or a Kerberos principal), None on a 401.
        started: ``time.monotonic()`` when the request head arrived.
        finished: ``time.monotonic()`` just before the response was written.
        token_length: Size in bytes of the decoded token the client sent (never the token).
        ntlm_message: The NTLM message type the client sent (1 or 3), also when wrapped in
            SPNEGO; None for Kerberos and for requests without a token.
        channel_binding: For a type 3 message, what the client bound to: ``"none"`` (no
            MsvAvChannelBindings), ``"zero"`` (16 zero bytes: "client has no binding"),
            ``"match"`` or ``"mismatch"`` (over plain HTTP any non-zero binding is a
            mismatch). For Kerberos, ``"match"`` or ``"none"``, and only known when
            ``require_channel_binding`` made the acceptor check it.
        handshake: True on the request that completed a handshake.
        error: Why the acceptor rejected a token (no token bytes in it), else None.
        mechanism: The mechanism that authenticated the connection (``"ntlm"`` or
            ``"kerberos"``), on every 200; None on a 401.
    """

    conn_seq: int
    method: str
    path: str
    scheme: str | None
    status: int
    user: str | None
    started: float
    finished: float
    token_length: int = 0
    ntlm_message: int | None = None
    channel_binding: str | None = None
    handshake: bool = False
    error: str | None = None
    mechanism: str | None = None


@dataclass
class _ConnectionAuth:
    """Auth state of one TCP connection: a pending acceptor or an authenticated user."""

    context: spnego.ContextProxy | None = None
    scheme: str | None = None
    user: str | None = None
    user_scheme: str | None = None
    user_mechanism: str | None = None

    def reset(self) -> None:
        self.context = self.scheme = self.user = self.user_scheme = self.user_mechanism = None


class _Rejected(Exception):
    """A token the acceptor (or the channel-binding policy) refused; 401 and start over."""


# -- the server ----------------------------------------------------------------------------


class _AcceptorExchange(Exchange[_AcceptorServerT, _ConnectionAuth]):
    """The part of an exchange that steps the connection's pyspnego acceptor.

    Shared by :class:`IISLikeServer` (``Authorization``/401) and the authenticating proxy
    (``Proxy-Authorization``/407): only the header names and the responses differ.
    """

    # Filled in while handling, for the log record.
    scheme: str | None = None
    token_length = 0
    ntlm_message: int | None = None
    channel_binding: str | None = None
    error: str | None = None
    mechanism: str | None = None

    def step(self, token: bytes) -> bytes | None:
        """Feed one client token to this connection's acceptor; raise _Rejected on failure."""
        server, auth = self.server, self.auth
        assert self.scheme is not None
        self.token_length = len(token)
        self.ntlm_message = ntlm_message_type(token)
        starts_handshake = self.ntlm_message == 1 or token[0] == _SPNEGO_INIT_TAG
        if starts_handshake:
            # A new handshake always starts over, also on an authenticated connection.
            self.drop_auth()
            auth.scheme = self.scheme
            auth.context = spnego.server(protocol=self.scheme.lower())
        elif auth.context is None or auth.scheme != self.scheme:
            raise _Rejected("no handshake in progress on this connection for this scheme")
        elif server.affinity_cookie is not None and not self.has_affinity():
            # Without the cookie a farm's balancer may send the leg to another server, which
            # knows nothing of this handshake.
            raise _Rejected(f"handshake leg without the {server.affinity_cookie} cookie")

        bindings = None
        if self.ntlm_message == 3:
            message = _ntlm_message(token)
            assert message is not None
            self.channel_binding = self.diagnose_binding(_client_channel_binding(message))
            if server.require_channel_binding:
                if self.channel_binding == "zero":
                    # pyspnego treats all zeros as "no binding, accept" even when the acceptor
                    # has bindings; IIS with Extended Protection "Require" does not.
                    raise _Rejected("client sent an all-zero channel binding")
                bindings = server.channel_bindings
        elif self.ntlm_message is None and server.require_channel_binding:
            # Not NTLM, so Kerberos (alone or in SPNEGO): MIT's acceptor checks the bindings
            # in the authenticator and rejects a mismatch, but accepts a missing binding.
            bindings = server.channel_bindings
        try:
            out_token = auth.context.step(token, channel_bindings=bindings)
        except Exception as exc:
            # Malformed tokens surface as struct.error/ValueError, bad logons as SpnegoError.
            raise _Rejected(f"{type(exc).__name__}: {exc}") from None
        # pyspnego's acceptors either finish or answer with a token; kept against a new one.
        if not auth.context.complete and not out_token:  # pragma: no cover - see above
            raise _Rejected("acceptor neither completed nor produced a token")
        if auth.context.complete:
            self.mechanism = auth.context.negotiated_protocol
            if self.mechanism == "kerberos" and bindings is not None:
                bound = _kerberos_channel_bound(auth.context)
                self.channel_binding = "match" if bound else "none"
                if not bound:
                    # As IIS Extended Protection "Require" does.
                    raise _Rejected("Kerberos authenticator carries no channel binding")
        return out_token

    def affinity_value(self) -> str:
        return f"conn-{self.seq}"

    def has_affinity(self) -> bool:
        cookies = self.header(b"cookie") or ""
        wanted = f"{self.server.affinity_cookie}={self.affinity_value()}"
        return any(part.strip() == wanted for part in cookies.split(";"))

    def diagnose_binding(self, sent: bytes | None) -> str:
        if sent is None:
            return "none"
        if sent == b"\x00" * 16:
            return "zero"
        return "match" if sent == self.server._expected_binding_md5 else "mismatch"

    def drop_auth(self) -> None:
        """Forget any pending handshake and the connection's user."""
        self.auth.reset()
        self.server._set_user(self.seq, None)


class _Exchange(_AcceptorExchange["IISLikeServer"]):
    """One request on a connection: the auth state machine and the response."""

    async def respond(self) -> bool:
        """Run the auth state machine and answer; False means "close the connection now"."""
        server, auth = self.server, self.auth
        if self.authorization is None:
            if auth.user is not None and not server.auth_per_request:
                self.mechanism = auth.user_mechanism
                await self.ok(auth.user, auth.user_scheme, handshake=False)
                return True
            # Anonymous, or a request that abandoned a pending handshake.
            self.drop_auth()
            await self.unauthorized()
            return True

        scheme, _, encoded = self.authorization.strip().partition(" ")
        self.scheme = next((s for s in server.schemes if s.lower() == scheme.lower()), scheme)
        try:
            if self.scheme not in server.schemes:
                raise _Rejected(f"scheme {scheme!r} not offered")
            try:
                token = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise _Rejected("token is not base64") from None
            if not token:
                raise _Rejected("empty token")
            out_token = self.step(token)
        except _Rejected as exc:
            self.error = str(exc)
            self.drop_auth()
            if server.spnego_reject and self.scheme == "Negotiate":
                # As mod_auth_gssapi: the final 401 carries the SPNEGO reject token only.
                await self.unauthorized(challenge=_SPNEGO_REJECT_TOKEN)
            else:
                await self.unauthorized()
            return True

        context = auth.context
        assert context is not None  # step() created it or raised
        if not context.complete:
            # Leg 1 answered: the challenge must come back on this connection.
            assert out_token is not None  # step() guarantees a token for an open context
            if self.path == "/close-after-challenge":
                # The server drops the connection between the legs, with or without saying so.
                announce = self.query.get("announce") == ["1"]
                await self.unauthorized(challenge=out_token, close=announce)
                return False
            await self.unauthorized(challenge=out_token)
            return True

        # Handshake complete.
        user = context.client_principal or ""
        auth.context = None
        if server.auth_per_request:
            auth.reset()
        else:
            auth.user, auth.user_scheme = user, self.scheme
            auth.user_mechanism = self.mechanism
            server._set_user(self.seq, user)
        with server._lock:
            server._handshakes_completed += 1
        if out_token and server.final_token == "omit":
            out_token = None
        elif out_token and server.final_token == "corrupt":
            # Same length, last byte flipped: the MIC or AP-REP checksum no longer verifies.
            out_token = out_token[:-1] + bytes([out_token[-1] ^ 0xFF])
        await self.ok(user, self.scheme, handshake=True, final_token=out_token)
        return True

    # -- responses -------------------------------------------------------------------------

    async def unauthorized(self, *, challenge: bytes | None = None, close: bool = False) -> None:
        """401: bare scheme offers (fresh), or the acceptor's challenge for this scheme."""
        if challenge is None:
            headers = [(b"WWW-Authenticate", scheme.encode()) for scheme in self.server.schemes]
        else:
            assert self.scheme is not None
            value = f"{self.scheme} {base64.b64encode(challenge).decode()}"
            headers = [(b"WWW-Authenticate", value.encode())]
        if self.server.affinity_cookie is not None:
            cookie = f"{self.server.affinity_cookie}={self.affinity_value()}; Path=/; HttpOnly"
            headers.append((b"Set-Cookie", cookie.encode()))
        await self.reply(
            401, _UNAUTHORIZED_BODY, b"text/html", headers, user=None, handshake=False, close=close
        )

    async def ok(
        self,
        user: str,
        scheme: str | None,
        *,
        handshake: bool,
        final_token: bytes | None = None,
    ) -> None:
        headers = []
        if final_token:
            # SPNEGO's accept-complete token with the mechListMIC; a pyspnego Negotiate
            # initiator is only complete after it has processed this.
            value = f"{scheme} {base64.b64encode(final_token).decode()}"
            headers.append((b"WWW-Authenticate", value.encode()))
        payload = {
            "user": user,
            "conn": self.seq,
            "path": self.target,
            "method": self.method,
            "body_length": len(self.body),
            "handshake": handshake,
            "scheme": scheme,
        }
        await self.reply(
            200,
            json.dumps(payload).encode(),
            b"application/json",
            headers,
            user=user,
            handshake=handshake,
        )

    async def reply(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: list[tuple[bytes, bytes]],
        *,
        user: str | None,
        handshake: bool,
        close: bool = False,
    ) -> None:
        response_headers: list[tuple[bytes, bytes]] = [
            (b"X-Conn-Seq", str(self.seq).encode()),
            *headers,
            (b"Content-Type", content_type),
            (b"Content-Length", str(len(body)).encode()),
        ]
        if close:
            response_headers.append((b"Connection", b"close"))
        events: list[Any] = [
            h11.Response(status_code=status, headers=response_headers, reason=reason_phrase(status))
        ]
        if self.method != "HEAD":
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())

        def record() -> None:
            entry = NTLMRequestRecord(
                conn_seq=self.seq,
                method=self.method,
                path=self.target,
                scheme=self.scheme,
                status=status,
                user=user,
                started=self.started,
                finished=time.monotonic(),
                token_length=self.token_length,
                ntlm_message=self.ntlm_message,
                channel_binding=self.channel_binding,
                handshake=handshake,
                error=self.error,
                mechanism=self.mechanism if status == 200 else None,
            )
            self.server._record(entry)

        await self.stream.send(*events, before_write=record)


class _AcceptorServer(KeepAliveServer[_RecordT, _ConnectionAuth], Generic[_RecordT]):
    """What the servers with a pyspnego acceptor per connection share (IISLikeServer and the
    authenticating proxy): the user file owned while running, the token-log filter on the
    server thread, the channel bindings of the served certificate, a handshake counter."""

    #: Only IISLikeServer plays a load balancer; the acceptor step checks this.
    affinity_cookie: str | None = None

    def __init__(
        self,
        *,
        user_file: str | os.PathLike[str],
        ssl_context: ssl.SSLContext | None,
        auth_per_request: bool,
        require_channel_binding: bool,
        idle_timeout: float | None,
        host: str,
    ) -> None:
        super().__init__(
            host=host,
            ssl_context=ssl_context,
            idle_timeout=idle_timeout,
            auth_per_request=auth_per_request,
        )
        if require_channel_binding and ssl_context is None:
            raise ValueError("require_channel_binding needs an ssl_context (bindings are TLS)")
        self.user_file = Path(user_file)
        if not self.user_file.is_file():
            raise FileNotFoundError(f"user file {self.user_file} does not exist")
        self.require_channel_binding = require_channel_binding
        #: DER of the certificate the server presents (HTTPS only, else None).
        self.certificate_der: bytes | None = None
        #: The ``tls-server-end-point`` bindings a client must send (HTTPS only).
        self.channel_bindings: GssChannelBindings | None = None
        self._expected_binding_md5: bytes | None = None
        if ssl_context is not None:
            self.certificate_der = _served_certificate(ssl_context)
            self.channel_bindings = channel_bindings_for(self.certificate_der)
            self._expected_binding_md5 = _md5(self.channel_bindings.pack())
        self._env_acquired = False
        self._handshakes_completed = 0

    # -- lifecycle: own NTLM_USER_FILE while running ----------------------------------------

    def start(self: _AcceptorServerT) -> _AcceptorServerT:
        """Point ``NTLM_USER_FILE`` at ``user_file`` and start listening.

        Returns:
            The server itself.

        Raises:
            RuntimeError: Another ``IISLikeServer`` or ``AuthProxy`` with a different user
                file is running in this process (``NTLM_USER_FILE`` is process-wide), the
                server was started before, or the listener could not be opened.
        """
        acquired = False
        # A second start() must not take (or drop) it again; a server without an acceptor
        # (a Basic-only proxy) reads the file itself and leaves the variable alone.
        if not self._env_acquired and self._uses_acceptor():
            _UserFileEnv.acquire(self.user_file)
            self._env_acquired = acquired = True
        try:
            super().start()
        except BaseException:
            if acquired:
                self._release_env()
            raise
        return self

    def _uses_acceptor(self) -> bool:
        """Whether pyspnego's acceptor (and so ``NTLM_USER_FILE``) is needed."""
        return True

    def stop(self) -> None:
        """Close every connection, stop the thread and restore ``NTLM_USER_FILE``."""
        try:
            super().stop()
        finally:
            self._release_env()

    def _release_env(self) -> None:
        if self._env_acquired:
            self._env_acquired = False
            _UserFileEnv.release()

    async def _main(self) -> None:
        thread_id = threading.get_ident()
        _TOKEN_LOG_FILTER.thread_ids.add(thread_id)
        try:
            await super()._main()
        finally:
            _TOKEN_LOG_FILTER.thread_ids.discard(thread_id)

    # -- counters --------------------------------------------------------------------------

    @property
    def handshakes_completed(self) -> int:
        """Handshakes the acceptor completed (successful type 3 messages, Kerberos logons)."""
        with self._lock:
            return self._handshakes_completed

    def _reset_locked(self) -> None:
        super()._reset_locked()
        self._handshakes_completed = 0


class IISLikeServer(_AcceptorServer[NTLMRequestRecord]):
    """An HTTP/1.1 server on loopback that authenticates connections the way IIS does.

    Every path is protected. The first request on a connection gets a 401 offering the
    ``schemes``; an NTLM or Negotiate handshake (a real pyspnego acceptor per TCP
    connection) then authenticates the *connection*, and later requests on it pass without
    ``Authorization`` (unless ``auth_per_request``). A handshake leg sent on another
    connection, a wrong password, or a missing channel binding is rejected with a 401, as
    IIS rejects it. The 200 body is JSON: ``{"user", "conn", "path", "method",
    "body_length", "handshake", "scheme"}``. Every response carries ``X-Conn-Seq``, the
    server's serial number of the TCP connection (1, 2, ...).

    Use it as a context manager (``with IISLikeServer(...) as srv:``) or with
    :meth:`start` and :meth:`stop`; :attr:`url` is the base URL, and the counters
    (:attr:`requests_total`, :attr:`connections_opened`, :attr:`handshakes_completed`,
    :attr:`log`) say what clients did.

    Args:
        user_file: The accounts that may log on, in ``NTLM_USER_FILE`` form: write it with
            :func:`write_user_file`. The file may be edited while the server runs.
        ssl_context: Serve HTTPS with this server-side context (its certificate chain
            loaded, e.g. ``trustme.CA().issue_cert("127.0.0.1").configure_cert(context)``).
            The server computes its ``tls-server-end-point`` channel bindings from it.
        schemes: What the anonymous 401 offers, in order: ``"Negotiate"`` and/or
            ``"NTLM"`` (case-insensitive).
        auth_per_request: Like IIS ``authPersistSingleRequest``: every request needs a
            full handshake, and an authenticated connection is not remembered.
        require_channel_binding: Like IIS Extended Protection "Require": reject a type 3
            message (or Kerberos authenticator) without the channel binding of this
            server's certificate. Needs ``ssl_context``.
        idle_timeout: Close a keep-alive connection idle for this many seconds (None: keep
            it open until the client closes it).
        affinity_cookie: Behave like a load balancer with cookie affinity in front of a
            farm (IIS ARR, F5): every 401 sets this cookie (``Set-Cookie: <name>=<id>``),
            and a handshake leg that does not send it back is rejected, as it would have
            reached another server of the farm. None (default): no cookies.
        spnego_reject: Answer a failed Negotiate login the way Apache mod_auth_gssapi does:
            a final 401 whose only challenge is ``Negotiate`` with an SPNEGO NegTokenResp
            ``negState=reject`` (``oQcwBaADCgEC``), instead of
            IIS's fresh bare offers. Logins under the ``NTLM`` scheme keep IIS's answer.
        final_token: What the 200 that completes a handshake carries when the acceptor has
            a last token (SPNEGO accept-complete, a Kerberos AP-REP: how the server proves
            who it is): ``"send"`` (default), ``"omit"`` (none), or ``"corrupt"`` (the
            token with its last byte flipped), to test a client's mutual authentication.
        host: The address to listen on. Keep it on loopback (``127.0.0.1``, ``::1``): this
            server is for tests.

    Raises:
        ValueError: ``schemes`` is empty or names another scheme,
            ``require_channel_binding`` is set without an ``ssl_context``, ``ssl_context``
            presents no certificate, or ``final_token`` is not one of its choices.
        FileNotFoundError: ``user_file`` does not exist.

    pyspnego reads ``NTLM_USER_FILE`` from the process environment, so the server sets it
    while it runs (and restores it when it stops); servers running at the same time in one
    process must share one user file. The server never stores or logs a token: its records
    hold token lengths only.
    """

    _thread_name = "loopback-iis"
    _state_type = _ConnectionAuth
    _exchange_type = _Exchange

    def __init__(
        self,
        *,
        user_file: str | os.PathLike[str],
        ssl_context: ssl.SSLContext | None = None,
        schemes: tuple[str, ...] = ("Negotiate", "NTLM"),
        auth_per_request: bool = False,
        require_channel_binding: bool = False,
        idle_timeout: float | None = None,
        affinity_cookie: str | None = None,
        spnego_reject: bool = False,
        final_token: str = "send",
        host: str = "127.0.0.1",
    ) -> None:
        known = {"ntlm": "NTLM", "negotiate": "Negotiate"}
        if not schemes or any(s.lower() not in known for s in schemes):
            raise ValueError(f"schemes must be a non-empty choice of {sorted(known.values())}")
        if final_token not in _FINAL_TOKEN_MODES:
            raise ValueError(
                f"final_token must be one of {_FINAL_TOKEN_MODES}, not {final_token!r}"
            )
        super().__init__(
            user_file=user_file,
            ssl_context=ssl_context,
            auth_per_request=auth_per_request,
            require_channel_binding=require_channel_binding,
            idle_timeout=idle_timeout,
            host=host,
        )
        self.schemes = tuple(known[s.lower()] for s in schemes)
        if affinity_cookie is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", affinity_cookie):
            raise ValueError(f"affinity_cookie {affinity_cookie!r} is not a plain cookie name")
        self.affinity_cookie = affinity_cookie
        self.spnego_reject = spnego_reject
        self.final_token = final_token

    # -- connection handling ---------------------------------------------------------------
