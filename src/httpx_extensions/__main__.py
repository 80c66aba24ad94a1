"""``python -m httpx_extensions``: the command line (``demo``, ``probe``; see docs/cli.md)."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main(prog_name="python -m httpx_extensions"))
