"""Digest for a proxy (``_proxy_auth._Digest``): answers checked against RFC 7616's examples.

The loopback proxy's tests cover MD5 with qop=auth end to end; these cover the other shapes
of a challenge: SHA-256, the -sess variants, no qop (RFC 2069), an opaque value to echo, and
the challenges it must refuse (then the proxy's 407 is returned as it is).
"""

from __future__ import annotations

import hashlib
import secrets

import pytest

from httpx_extensions._proxy_auth import _Digest

# RFC 7616, section 3.9.1.
RFC_USER, RFC_PASSWORD = "Mufasa", "Circle of Life"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


def fields(header: bytes) -> dict[str, str]:
    text = header.decode()
    assert text.startswith("Digest ")
    parts = (p.split("=", 1) for p in text[len("Digest ") :].split(", "))
    return {k: v.strip('"') for k, v in parts}


@pytest.fixture(autouse=True)
def rfc_cnonce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "token_hex", lambda n: RFC_CNONCE)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_proxy_auth_digest_matches_rfc_7616(algorithm: str, expected: str) -> None:
    digest = _Digest(RFC_USER, RFC_PASSWORD)
    assert digest.learn(RFC_CHALLENGE.format(algorithm=algorithm))
    header = digest.header("GET", "/dir/index.html")
    assert header is not None
    got = fields(header)
    assert got["response"] == expected
    assert got["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert got["nc"] == "00000001"
    assert got["algorithm"] == algorithm
    # The next request on the same challenge counts up.
    assert fields(digest.header("GET", "/dir/index.html") or b"")["nc"] == "00000002"


def test_proxy_auth_digest_sess_and_no_qop() -> None:
    # -sess hashes the nonce and cnonce into HA1; without qop the RFC 2069 form is used.
    digest = _Digest("alice", "pw")
    assert digest.learn('Digest realm="proxy", nonce="abc", algorithm=SHA-256-sess')

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    got = fields(digest.header("CONNECT", "example.org:443") or b"")
    ha1 = sha(f"{sha('alice:proxy:pw')}:abc:{RFC_CNONCE}")
    assert got["response"] == sha(f"{ha1}:abc:{sha('CONNECT:example.org:443')}")
    assert "qop" not in got
    assert "nc" not in got
    assert "opaque" not in got


@pytest.mark.parametrize(
    "challenge",
    [
        'Digest nonce="abc"',  # no realm
        'Digest realm="proxy"',  # no nonce
        'Digest realm="proxy", nonce="abc", algorithm=SHA-512-256',  # not a hash we know
        'Digest realm="proxy", nonce="abc", qop="auth-int"',  # only integrity protection
    ],
)
def test_proxy_auth_digest_refuses_unusable_challenges(challenge: str) -> None:
    digest = _Digest("alice", "pw")
    assert not digest.learn(challenge)
    assert digest.nonce is None
    assert digest.header("GET", "http://example.org/") is None  # nothing to answer with
    assert repr(digest) == "DigestAuth('alice')"  # the user, never the password
