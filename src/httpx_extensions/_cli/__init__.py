"""The ``httpx-extensions`` command line: ``demo``, ``probe`` and ``docs`` (see ``docs/cli.md``,
also printed by ``httpx-extensions docs cli``).

``demo`` and ``probe`` need click and rich, which the library itself does not: they come with
the ``cli`` extra (``pip install 'httpx-extensions[cli]'``). This module imports neither, so
that the console script can say so instead of failing with a traceback, and ``docs`` works
without them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

# Top-level packages of the cli extra (and the ones they need at import time).
_EXTRA_PACKAGES = frozenset({"click", "rich", "markdown_it", "mdurl", "pygments"})


def main(argv: Sequence[str] | None = None, *, prog_name: str = "httpx-extensions") -> int:
    """Run the command line.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        prog_name: The name to show in usage and help text.

    Returns:
        1 when the ``cli`` extra is missing (but ``docs``, which runs without it, returns its
        own status); otherwise click exits the process with the command's own status
        (0 success, 1 failure, 2 usage error).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from ._app import cli
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in _EXTRA_PACKAGES:
            raise
        from ._docs import docs_dir, main_without_click

        if args[:1] == ["docs"]:
            return main_without_click(args[1:], prog_name)
        folder = docs_dir()
        sys.stderr.write(
            f"{prog_name}: the command line needs the 'cli' extra ({exc.name} is not "
            "installed). Install it with:\n\n"
            "    pip install 'httpx-extensions[cli]'\n"
            + (
                f"\nThe documentation is installed in {folder} "
                f"('{prog_name} docs' lists the pages, with or without the extra).\n"
                if folder is not None
                else ""
            )
        )
        return 1
    return int(cli.main(args=None if argv is None else args, prog_name=prog_name) or 0)
