"""The states of a pooled connection, and the snapshot ``connections`` returns.

Shared by the async pool (``_pool.py``) and the sync one generated from it, so
``ExClient.connections`` and ``ExSyncClient.connections`` speak of the same
:class:`ConnectionState` members.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["ConnectionInfo", "ConnectionState"]


class ConnectionState(enum.Enum):
    """The states of a pooled connection. See the module docstring for the transitions."""

    CONNECTING = "CONNECTING"
    ACTIVE = "ACTIVE"
    IDLE = "IDLE"
    RESERVED = "RESERVED"
    CLOSED = "CLOSED"

    # Members are singletons compared by identity: hash them by identity too (in C), not
    # through Enum's Python-level hash of the name; every state change looks two of them up.
    __hash__ = object.__hash__


_S = ConnectionState
_TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    _S.CONNECTING: frozenset({_S.ACTIVE, _S.CLOSED}),
    _S.ACTIVE: frozenset({_S.IDLE, _S.RESERVED, _S.CLOSED}),
    _S.IDLE: frozenset({_S.ACTIVE, _S.CLOSED}),
    _S.RESERVED: frozenset({_S.ACTIVE, _S.IDLE, _S.CLOSED}),
    _S.CLOSED: frozenset(),
}


@dataclass(frozen=True)
class ConnectionInfo:
    """A snapshot of one pooled connection, as returned by ``ExClient.connections``.

    Attributes:
        conn_id: The id shown on ``response.extensions["conn_id"]``; pin requests with it.
        origin: ``scheme://host:port`` of the server the connection talks to.
        partition: The partition key it belongs to (``None`` for requests without one).
        state: Its :class:`ConnectionState`.
        reserved: True when RESERVED to a running ``send()``.
        requests: How many requests it has carried.
    """

    conn_id: int
    origin: str
    partition: Hashable
    state: ConnectionState
    reserved: bool
    requests: int
