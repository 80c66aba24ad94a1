"""``httpx-extensions docs [PAGE]``: the documentation pages installed with the package.

The project records no web address for its documentation, so the wheel carries the pages
themselves: the Markdown files of the repository's ``docs/`` folder are packaged as
``httpx_extensions/docs/*.md`` (see ``pyproject.toml``). In a source checkout (an editable
install) they are read from the repository's ``docs/`` instead.

This module imports neither click nor rich, so that ``docs`` works without the ``cli`` extra.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

__all__ = ["docs_dir", "main_without_click", "page_path", "pages", "show"]

_PACKAGE = Path(__file__).resolve().parent.parent  # .../httpx_extensions


def docs_dir() -> Path | None:
    """The folder holding the installed pages, or None when there is none."""
    installed = _PACKAGE / "docs"  # from a wheel
    if installed.is_dir():
        return installed
    checkout = _PACKAGE.parent.parent / "docs"  # src/httpx_extensions -> the repository
    if (checkout / "cli.md").is_file():
        return checkout
    return None


def pages() -> dict[str, str]:
    """Page name (the file name without ``.md``) -> its title (the first ``#`` heading)."""
    folder = docs_dir()
    found: dict[str, str] = {}
    if folder is None:
        return found
    for path in sorted(folder.glob("*.md")):
        title = path.stem
        with path.open(encoding="utf-8") as file:
            for line in file:
                if line.startswith("# "):
                    title = line[2:].strip()
                    break
        found[path.stem] = title
    return found


def page_path(name: str) -> Path:
    """The file of page ``name`` (``cli``, ``cli.md`` and ``docs/cli.md`` all name one page).

    Raises:
        LookupError: no such page (the message lists the pages there are), or no pages at all.
    """
    folder = docs_dir()
    if folder is None:
        raise LookupError(
            "the documentation pages are not installed with this copy of httpx-extensions"
        )
    stem = name.strip().replace("\\", "/").rsplit("/", 1)[-1].lower().removesuffix(".md")
    path = folder / f"{stem}.md"
    if stem and path.is_file():
        return path
    raise LookupError(f"no page {name!r}; the pages are: {', '.join(pages())}")


def show(page: str | None, path_only: bool, out: TextIO) -> None:
    """Print the list of pages (``page`` None) or one page, or with ``path_only`` its path.

    Raises:
        LookupError: as :func:`page_path`.
    """
    if page is not None:
        path = page_path(page)
        out.write(f"{path}\n" if path_only else path.read_text(encoding="utf-8"))
        return
    folder = docs_dir()
    if folder is None:
        raise LookupError(
            "the documentation pages are not installed with this copy of httpx-extensions"
        )
    if path_only:
        out.write(f"{folder}\n")
        return
    out.write(f"The documentation pages, in {folder}:\n\n")
    listed = pages()
    width = max(map(len, listed), default=0)
    for name, title in listed.items():
        out.write(f"  {name:<{width}}  {title}\n")
    out.write("\n`httpx-extensions docs PAGE` prints a page; add --path for its file.\n")


def main_without_click(argv: list[str], prog_name: str) -> int:
    """``docs [PAGE] [--path]`` when click is not installed (the same options as with it)."""
    usage = f"Usage: {prog_name} docs [--path] [PAGE]\n"
    path_only = "--path" in argv
    rest = [arg for arg in argv if arg != "--path"]
    if any(arg in ("-h", "--help") for arg in rest):
        sys.stdout.write(usage + "\n  List the documentation pages, or print PAGE.\n")
        return 0
    if len(rest) > 1 or any(arg.startswith("-") for arg in rest):
        sys.stderr.write(usage + f"Error: unexpected arguments {' '.join(rest)}\n")
        return 2
    try:
        show(rest[0] if rest else None, path_only, sys.stdout)
    except LookupError as exc:
        sys.stderr.write(f"{prog_name} docs: {exc}\n")
        return 1
    return 0
