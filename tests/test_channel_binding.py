"""Channel binding (RFC 5929 tls-server-end-point) on real certificates.

Each test makes a CA and a server certificate whose signature uses SHA-1, SHA-256 or SHA-384,
serves it from the IIS-like server with Extended Protection required, and checks the binding
the client put in its NTLM AUTHENTICATE message against the value computed here, from the
certificate bytes and RFC 5929's rule alone (MD5 and SHA-1 signed certificates are hashed
with SHA-256, others with their signature's hash). A TLS-terminating relay that presents
another certificate (what the binding exists to defeat) must be refused.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from httpx_extensions import ExClient, NTLMAuth

from .conftest import assert_pool_clean
from .servers import IISLikeServer, write_user_file

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")

# sha256WithRSAEncryption and sha1WithRSAEncryption: the same length, one byte apart.
_SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b")
_SHA1_WITH_RSA = bytes.fromhex("06092a864886f70d010105")


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _sign_with_sha1(certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> bytes:
    """Re-sign a SHA-256/RSA certificate with SHA-1 (cryptography's builder refuses SHA-1).

    The TBS part names its signature algorithm, so the OID is swapped there too; both OIDs
    have the same length, so no enclosing length changes.
    """
    tbs = certificate.tbs_certificate_bytes
    assert tbs.count(_SHA256_WITH_RSA) == 1
    tbs = tbs.replace(_SHA256_WITH_RSA, _SHA1_WITH_RSA)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    algorithm = _der(0x30, _SHA1_WITH_RSA + b"\x05\x00")
    return _der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature))


@dataclass
class Chain:
    ca_pem: bytes
    leaf_der: bytes
    leaf_pem: bytes
    key_pem: bytes
    weak: bool  # SHA-1: OpenSSL needs security level 0 on both ends

    def server_context(self, tmp_path: Path) -> ssl.SSLContext:
        cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
        cert_file.write_bytes(self.leaf_pem)
        key_file.write_bytes(self.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if self.weak:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.load_cert_chain(cert_file, key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        if self.weak:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        return context


_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "channel-binding test CA")])


def make_ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_NAME)
        .issuer_name(_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_chain(
    signature_hash: str, ca: tuple[rsa.RSAPrivateKey, x509.Certificate] | None = None
) -> Chain:
    ca_key, ca_cert = ca or make_ca()
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if signature_hash == "sha1":
        leaf_der = _sign_with_sha1(builder.sign(ca_key, hashes.SHA256()), ca_key)
    else:
        algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}[signature_hash]
        leaf_der = builder.sign(ca_key, algorithm).public_bytes(serialization.Encoding.DER)
    loaded = x509.load_der_x509_certificate(leaf_der)
    assert loaded.signature_hash_algorithm is not None
    assert loaded.signature_hash_algorithm.name == signature_hash  # the chain is what we say
    if signature_hash != "sha1":  # cryptography does not verify SHA-1 signatures
        loaded.verify_directly_issued_by(ca_cert)
    return Chain(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        leaf_der=leaf_der,
        leaf_pem=ssl.DER_cert_to_PEM_cert(leaf_der).encode(),
        key_pem=leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        weak=signature_hash == "sha1",
    )


def rfc5929_end_point(der: bytes) -> bytes:
    """tls-server-end-point, from RFC 5929 section 4.1 (written here, not imported)."""
    name = x509.load_der_x509_certificate(der).signature_hash_algorithm.name  # type: ignore[union-attr]
    return hashlib.new("sha256" if name in ("md5", "sha1") else name, der).digest()


def gss_bindings_md5(application_data: bytes) -> bytes:
    """MD5 of the flattened gss_channel_bindings_struct, as NTLM's MsvAvChannelBindings
    carries it (MS-NLMP 3.1.5.1.2): no addresses, then the application data."""
    flat = struct.pack("<IIIII", 0, 0, 0, 0, len(application_data)) + application_data
    return hashlib.md5(flat, usedforsecurity=False).digest()


def ntlm_type(authorization: str) -> int:
    message = base64.b64decode(authorization.split(" ", 1)[1])
    assert message[:8] == b"NTLMSSP\x00"
    return int(struct.unpack_from("<I", message, 8)[0])


def sent_channel_binding(authorization: str) -> bytes | None:
    """MsvAvChannelBindings (AV id 0x000A) from an NTLM AUTHENTICATE Authorization header."""
    assert ntlm_type(authorization) == 3
    message = base64.b64decode(authorization.split(" ", 1)[1])
    length, _max, offset = struct.unpack_from("<HHI", message, 20)
    nt_response = message[offset : offset + length]
    position = 16 + 28  # NTProofStr, then the fixed part of NTLMv2_CLIENT_CHALLENGE
    while position + 4 <= len(nt_response):
        av_id, av_length = struct.unpack_from("<HH", nt_response, position)
        position += 4
        if av_id == 0:
            return None
        if av_id == 0x000A:
            return nt_response[position : position + av_length]
        position += av_length
    return None


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    users = [("EXAMPLE", "alice", "Passw0rd")]
    return write_user_file(tmp_path_factory.mktemp("cbt") / "users.txt", users)


def capture_authorization() -> tuple[list[str], dict[str, list[Callable]]]:  # type: ignore[type-arg]
    sent: list[str] = []

    async def record(request: httpx.Request) -> None:
        if "Authorization" in request.headers:
            sent.append(request.headers["Authorization"])

    return sent, {"request": [record]}


@pytest.mark.parametrize("signature_hash", ["sha1", "sha256", "sha384"])
async def test_channel_binding_follows_rfc_5929_for_the_certificate_served(
    user_file: Path, tmp_path: Path, signature_hash: str
) -> None:
    chain = make_chain(signature_hash)
    expected_hash = {
        "sha1": hashlib.sha256(chain.leaf_der).digest(),  # RFC 5929: SHA-1 -> SHA-256
        "sha256": hashlib.sha256(chain.leaf_der).digest(),
        "sha384": hashlib.sha384(chain.leaf_der).digest(),
    }[signature_hash]
    assert rfc5929_end_point(chain.leaf_der) == expected_hash
    application_data = b"tls-server-end-point:" + expected_hash
    sent, hooks = capture_authorization()
    with IISLikeServer(
        user_file=user_file,
        ssl_context=chain.server_context(tmp_path),
        require_channel_binding=True,
    ) as iis:
        async with ExClient(verify=chain.client_context(), event_hooks=hooks) as client:
            response = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
            assert response.status_code == 200
            assert response.json()["user"] == "EXAMPLE\\alice"
            assert_pool_clean(client)
        assert iis.certificate_der == chain.leaf_der
        assert iis.channel_bindings is not None
        assert iis.channel_bindings.application_data == application_data
        assert [r.channel_binding for r in iis.log if r.ntlm_message == 3] == ["match"]
    assert [ntlm_type(header) for header in sent] == [1, 3]
    type3 = sent[1]
    assert sent_channel_binding(type3) == gss_bindings_md5(application_data)


# A TLS-terminating relay in the middle: the client's TLS session ends at the relay, whose
# certificate (trusted by the client, as an intercepting proxy's is) is not the server's.


class TLSRelay:
    """Accepts TLS with its own certificate and relays the plaintext to the upstream over
    TLS: an NTLM relay attacker's position. Loopback only.

    One thread per relayed connection owns both of its TLS sockets: an OpenSSL connection
    must not be read in one thread while another writes or closes it (two pump threads per
    connection crashed the interpreter in CI)."""

    def __init__(
        self, context: ssl.SSLContext, upstream_port: int, upstream: ssl.SSLContext
    ) -> None:
        self._context = context
        self._upstream = upstream
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._accept = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TLSRelay:
        self._accept.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        socket.create_connection(("127.0.0.1", self.port)).close()  # wakes accept()
        self._accept.join()
        self._listener.close()
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            if self._stop.is_set():
                raw.close()
                return
            try:
                downstream = self._context.wrap_socket(raw, server_side=True)
                upstream = self._upstream.wrap_socket(
                    socket.create_connection(("127.0.0.1", self._upstream_port)),
                    server_hostname="127.0.0.1",
                )
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            thread = threading.Thread(
                target=_relay, args=(downstream, upstream, self._stop), daemon=True
            )
            thread.start()
            self._threads.append(thread)


def _relay(a: ssl.SSLSocket, b: ssl.SSLSocket, stop: threading.Event) -> None:
    """Copies bytes both ways until either side closes or ``stop`` is set; then closes both."""
    peer = {a: b, b: a}
    try:
        for sock in peer:
            sock.setblocking(False)
        while not stop.is_set():
            # Bytes already decrypted inside OpenSSL do not make the socket readable.
            ready = [sock for sock in peer if sock.pending()]
            if not ready:
                ready, _, _ = select.select(list(peer), [], [], 0.1)
            for sock in ready:
                try:
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue  # a TLS record in part, or a session ticket: no bytes yet
                if not data:
                    return
                target = peer[sock]
                target.setblocking(True)
                try:
                    target.sendall(data)
                finally:
                    target.setblocking(False)
    except (OSError, ssl.SSLError):
        return
    finally:
        for sock in peer:
            sock.close()


@pytest.fixture
def relayed(user_file: Path, tmp_path: Path) -> Iterator[tuple[IISLikeServer, int, ssl.SSLContext]]:
    ca = make_ca()
    server_chain = make_chain("sha256", ca)
    relay_chain = make_chain("sha256", ca)  # same CA, so the client trusts both
    (tmp_path / "server").mkdir()
    (tmp_path / "relay").mkdir()
    with (
        IISLikeServer(
            user_file=user_file,
            ssl_context=server_chain.server_context(tmp_path / "server"),
            require_channel_binding=True,
        ) as iis,
        TLSRelay(
            relay_chain.server_context(tmp_path / "relay"),
            iis.port,
            server_chain.client_context(),
        ) as relay,
    ):
        yield iis, relay.port, server_chain.client_context()


async def test_channel_binding_refused_through_a_tls_terminating_relay(
    relayed: tuple[IISLikeServer, int, ssl.SSLContext],
) -> None:
    iis, relay_port, client_context = relayed
    relay_url = f"https://127.0.0.1:{relay_port}/"
    async with ExClient(verify=client_context) as client:
        direct = await client.get(iis.url + "/", auth=NTLMAuth(*ALICE))
        assert direct.status_code == 200  # the credentials and the server are fine
        relayed_response = await client.get(relay_url, auth=NTLMAuth(*ALICE))
        assert relayed_response.status_code == 401  # bound to the relay's certificate
        assert_pool_clean(client)
    assert [r.channel_binding for r in iis.log if r.ntlm_message == 3] == ["match", "mismatch"]
    assert [r.user for r in iis.log if r.status == 200] == ["EXAMPLE\\alice"]
