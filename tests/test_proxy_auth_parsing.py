"""Reading a proxy's ``Proxy-Authenticate`` headers, and how a configured proxy shows itself."""

from __future__ import annotations

import httpx

from httpx_extensions import Proxy
from httpx_extensions._proxy_auth import ProxyAuthenticator, _token, parse_challenges


def test_proxy_auth_parse_challenges_keeps_parameters_with_their_scheme() -> None:
    headers = [
        (b"Content-Type", b"text/plain"),
        # Empty parts, and a parameter before any scheme (nothing to attach it to).
        (b"Proxy-Authenticate", b'realm="stray", , Basic realm="proxy", charset=UTF-8,'),
        (b"proxy-authenticate", b"NTLM TlRMTVNTUAACAAAA"),
    ]
    assert parse_challenges(headers) == {
        "basic": 'Basic realm="proxy", charset=UTF-8',
        "ntlm": "NTLM TlRMTVNTUAACAAAA",
    }


def test_proxy_auth_parse_challenges_commas_in_quoted_strings_split_nothing() -> None:
    # An escaped quote does not end the string; the comma after it is still inside.
    value = b'Digest realm="A 5\\" disk, East", nonce="n", qop="auth", NTLM'
    assert parse_challenges([(b"Proxy-Authenticate", value)]) == {
        "digest": 'Digest realm="A 5\\" disk, East", nonce="n", qop="auth"',
        "ntlm": "NTLM",
    }


def test_proxy_auth_malformed_challenge_token_is_no_token() -> None:
    assert _token("NTLM TlRMTVNTUAACAAAA") == b"NTLMSSP\x00\x02\x00\x00\x00"
    assert _token("NTLM not*base64") is None  # treated as a rejection, not a crash
    assert _token("NTLM") is None
    assert _token(None) is None


def test_proxy_repr_without_auth_shows_no_auth() -> None:
    assert repr(Proxy("http://proxy.example:8080")) == "Proxy('http://proxy.example:8080')"


def test_proxy_auth_explicit_scheme_not_offered_is_not_answered() -> None:
    url = httpx.URL("http://proxy.example:8080")
    basic = ProxyAuthenticator(httpx.BasicAuth("alice", "pw"), url)
    digest = ProxyAuthenticator(httpx.DigestAuth("alice", "pw"), url)
    offered = parse_challenges([(b"Proxy-Authenticate", b"Negotiate")])
    assert basic._choose(offered) is None
    assert digest._choose(offered) is None
    assert "alice" in repr(digest)
    assert "pw" not in repr(digest)
    assert ProxyAuthenticator(None, url)._choose(offered) is None
