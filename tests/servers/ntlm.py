"""The IIS-like NTLM/Negotiate server, which lives in the package now
(:mod:`httpx_extensions.testing`) so that users can test their own code against it.

Re-exported here so that ``tests.servers.ntlm`` and ``bench/ntlm.py`` keep working.
"""

from __future__ import annotations

from httpx_extensions.testing import *  # noqa: F403
from httpx_extensions.testing import __all__ as __all__
