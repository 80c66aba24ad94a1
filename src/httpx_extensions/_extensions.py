"""Names of the request/response ``extensions`` keys this library reads and writes.

The auth layer and the pool never import each other: they talk only through these keys,
defined once here.

``CONN_ID``
    On every response our pool serves: the id (an ``int``) of the connection it came on.
    On a request: send it on that connection (a *pin*).
``PARTITION``
    On a request: the pool partition it may use. Connections opened for one partition are
    never handed to a request of another (or of none). Auth classes set it from the identity
    they authenticate as; any hashable value works.

``PREEMPTIVE`` (private: the seam between the auth classes and our transport)
    On a request: an async callable ``(request, network_stream) -> [(name, value), ...]``.
    When the pool opens a *new* connection for the request, the transport awaits it after
    the connect (and TLS) handshake and adds the header pairs it returns; on a reused
    connection it is not called. The auth classes' ``preemptive=True`` uses it to put the
    first handshake token on the first request of a fresh connection only.
"""

from __future__ import annotations

CONN_ID = "conn_id"
PARTITION = "partition"
PREEMPTIVE = "httpx_extensions.preemptive"

__all__ = ["CONN_ID", "PARTITION"]
