"""Test your own code against connection-bound Windows authentication, on loopback.

:class:`IISLikeServer` is an HTTP/1.1 server that authenticates *connections* with NTLM
and Negotiate the way IIS does: a real pyspnego acceptor per TCP connection, a 401 with the
offered schemes, the challenge on the same connection, then 200s on that connection with no
``Authorization`` header. It runs in a thread of the calling process, so synchronous
fixtures can start it for asyncio and trio tests alike::

    from httpx_extensions import ExClient, NTLMAuth
    from httpx_extensions.testing import IISLikeServer, write_user_file

    users = write_user_file(tmp_path / "users.txt", [("EXAMPLE", "alice", "Passw0rd")])
    with IISLikeServer(user_file=users) as server:
        async with ExClient(auth=NTLMAuth("EXAMPLE\\\\alice", "Passw0rd")) as client:
            response = await client.get(server.url + "/data")
        assert response.json()["user"] == "EXAMPLE\\\\alice"
        assert server.handshakes_completed == 1

HTTPS: pass a server-side ``ssl.SSLContext`` with a certificate loaded (this package makes
no certificates; ``trustme`` is the usual way in tests). The server then derives its RFC 5929
channel bindings from that certificate, and ``require_channel_binding=True`` makes it
enforce them like IIS Extended Protection.

:class:`AuthProxy` is the same for proxies: a forward and CONNECT proxy on loopback that
answers with 407 and ``Proxy-Authenticate`` (NTLM and Negotiate bound to the client's
connection as Squid does, Basic and Digest per request, the same user file), keeps one
upstream connection per client connection and origin, and never passes
``Proxy-Authorization`` on::

    with AuthProxy(user_file=users, schemes=("NTLM", "Basic")) as proxy:
        ...  # point the client's proxy at proxy.url
        assert proxy.handshakes_completed == 1
        assert proxy.proxy_credentials_forwarded == 0

Dependencies are the library's own (pyspnego, its cryptography, and h11 through httpcore).
Kerberos logons need the ``gssapi`` package and a keytab in ``KRB5_KTNAME``.
"""

from __future__ import annotations

from ._iis import (
    IISLikeServer,
    NTLMRequestRecord,
    channel_bindings_for,
    ntlm_message_type,
    tls_server_end_point,
    write_user_file,
)
from ._proxy import AuthProxy, ProxyRequestRecord

__all__ = [
    "AuthProxy",
    "IISLikeServer",
    "NTLMRequestRecord",
    "ProxyRequestRecord",
    "channel_bindings_for",
    "ntlm_message_type",
    "tls_server_end_point",
    "write_user_file",
]
