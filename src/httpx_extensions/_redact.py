"""Log redaction that must be in place from ``import httpx_extensions`` on.

httpcore's DEBUG trace (``httpcore.http11``, ``httpcore.proxy``) prints every header of every
exchange. Routes that our pool does not serve (``mounts=`` with an httpx transport, respx)
still go through httpcore, and an application that turns on DEBUG logging to look at this
library would find Authorization and WWW-Authenticate values there. The filters below blank
those values; they are installed when this module is imported (by the package's
``__init__``), not when the auth module is, because that one is imported lazily.
"""

from __future__ import annotations

import logging
import re

__all__: list[str] = []

_AUTH_HEADER = re.compile(
    r"\((b?)(['\"])(authorization|www-authenticate|proxy-authorization|proxy-authenticate)\2,"
    r" b?(['\"]).*?\4\)",
    re.IGNORECASE,
)


class _RedactAuthHeaders(logging.Filter):
    """httpcore's DEBUG trace prints every header; blank the values of the auth ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if isinstance(message, str) and ("uthenticat" in message or "uthoriz" in message):
            record.msg = _AUTH_HEADER.sub(r"(\1\2\3\2, b'<redacted>')", message)
        return True


def _is_ours(installed: object) -> bool:
    kind = type(installed)
    return kind.__module__ == __name__ and kind.__qualname__ == _RedactAuthHeaders.__qualname__


def _install() -> None:
    for name in ("httpcore.http11", "httpcore.proxy"):
        trace_logger = logging.getLogger(name)
        # Idempotent: a reloaded module must not stack a second filter. Its class is then a
        # new one, of which the installed filter is no instance: compare by name.
        if not any(_is_ours(f) for f in trace_logger.filters):
            trace_logger.addFilter(_RedactAuthHeaders())


_install()
