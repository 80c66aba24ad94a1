"""The public face: one sorted ``__all__``, every name importable, private modules private."""

from __future__ import annotations
import __future__

import httpx

import httpx_extensions


def test_exports_all_is_sorted_and_complete() -> None:
    # dir(), not vars(): the auth names are imported on first access (module __getattr__).
    public = {
        name
        for name in dir(httpx_extensions)
        if not name.startswith("_")
        and not isinstance(
            getattr(httpx_extensions, name), (type(httpx_extensions), __future__._Feature)
        )
    }
    assert set(httpx_extensions.__all__) == public | {"__version__"}
    assert httpx_extensions.__all__ == sorted(httpx_extensions.__all__)


def test_exports_seed_names_stay_importable() -> None:
    from httpx_extensions import AsyncHTTPTransportMixin, ExClient, ExTransport

    assert AsyncHTTPTransportMixin is ExTransport
    assert issubclass(ExClient, httpx.AsyncClient)
    assert issubclass(ExTransport, httpx.AsyncBaseTransport)


def test_exports_errors_share_a_root_and_subclass_httpx() -> None:
    from httpx_extensions import (
        ConnectionStateError,
        HTTPXExtensionsError,
        PoolClosed,
        PoolTimeout,
        UnsupportedConfiguration,
    )

    for error in (ConnectionStateError, PoolClosed, PoolTimeout, UnsupportedConfiguration):
        assert issubclass(error, HTTPXExtensionsError)
    assert issubclass(PoolTimeout, httpx.PoolTimeout)
    assert issubclass(UnsupportedConfiguration, ValueError)
    assert issubclass(PoolClosed, RuntimeError)
