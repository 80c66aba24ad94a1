"""``httpx-extensions docs [PAGE]`` and the help texts' pointer to the installed pages.

The wheel carries ``docs/*.md`` as ``httpx_extensions/docs/`` (``scripts/package-check``
checks the built wheel); from this checkout the command reads the repository's ``docs/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from httpx_extensions._cli import _docs, main
from httpx_extensions._cli._app import cli

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_cli_docs_lists_every_page_with_its_title() -> None:
    result = CliRunner().invoke(cli, ["docs"])
    assert result.exit_code == 0, result.output
    assert f"in {DOCS}:" in result.output
    for page in sorted(DOCS.glob("*.md")):
        title = next(
            line[2:].strip()
            for line in page.read_text(encoding="utf-8").splitlines()
            if line.startswith("# ")
        )
        assert any(
            line.split(None, 1) == [page.stem, title] for line in result.output.splitlines()
        ), (page.stem, result.output)


@pytest.mark.parametrize("name", ["cli", "CLI.md", "docs/cli.md", "docs\\cli.md"])
def test_cli_docs_prints_the_page(name: str) -> None:
    result = CliRunner().invoke(cli, ["docs", name])
    assert result.exit_code == 0, result.output
    assert result.output == (DOCS / "cli.md").read_text(encoding="utf-8")


def test_cli_docs_path_of_a_page_and_of_the_folder() -> None:
    assert CliRunner().invoke(cli, ["docs", "auth", "--path"]).output == f"{DOCS / 'auth.md'}\n"
    assert CliRunner().invoke(cli, ["docs", "--path"]).output == f"{DOCS}\n"


@pytest.mark.parametrize("name", ["nope", "", "../README", ".md"])
def test_cli_docs_unknown_page_names_the_pages_there_are(name: str) -> None:
    result = CliRunner().invoke(cli, ["docs", name])
    assert result.exit_code == 1
    assert f"no page {name!r}; the pages are: auth, cli," in result.output


def test_cli_help_texts_point_to_the_installed_pages() -> None:
    top = CliRunner().invoke(cli, ["--help"]).output
    probe = CliRunner().invoke(cli, ["probe", "--help"]).output
    demo = CliRunner().invoke(cli, ["demo", "--help"]).output
    # Whole paths on one line each, so that they can be copied.
    assert f"httpx-extensions docs cli   {DOCS / 'cli.md'}\n" in probe
    assert f"httpx-extensions docs auth  {DOCS / 'auth.md'}\n" in probe
    assert f"httpx-extensions docs cli  {DOCS / 'cli.md'}\n" in top
    assert f"{DOCS / 'cli.md'}\n" in demo
    assert "List the documentation pages" in top


def test_cli_docs_prefers_the_pages_packaged_in_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installed wheel: site-packages/httpx_extensions/docs/*.md, no repository around it.
    package = tmp_path / "site-packages" / "httpx_extensions"
    (package / "docs").mkdir(parents=True)
    (package / "docs" / "auth.md").write_text("# Auth, installed\n\ntext\n", encoding="utf-8")
    monkeypatch.setattr(_docs, "_PACKAGE", package)
    assert _docs.docs_dir() == package / "docs"
    assert _docs.pages() == {"auth": "Auth, installed"}
    assert CliRunner().invoke(cli, ["docs", "auth"]).output == "# Auth, installed\n\ntext\n"
    # Neither a wheel's folder nor a checkout's: a clear error, not a traceback.
    monkeypatch.setattr(_docs, "_PACKAGE", tmp_path / "elsewhere" / "httpx_extensions")
    assert _docs.docs_dir() is None
    result = CliRunner().invoke(cli, ["docs"])
    assert result.exit_code == 1
    assert "pages are not installed" in result.output


def test_cli_docs_works_without_the_cli_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "click", None)  # import click -> ImportError
    monkeypatch.delitem(sys.modules, "httpx_extensions._cli._app")
    assert main(["docs", "security"]) == 0
    assert capsys.readouterr().out == (DOCS / "security.md").read_text(encoding="utf-8")
    assert main(["docs", "--path", "auth"]) == 0
    assert capsys.readouterr().out == f"{DOCS / 'auth.md'}\n"
    assert main(["docs"]) == 0
    assert "pinning" in capsys.readouterr().out
    assert main(["docs", "--help"]) == 0
    assert "Usage: httpx-extensions docs [--path] [PAGE]" in capsys.readouterr().out
    assert main(["docs", "auth", "cli"]) == 2
    assert "unexpected arguments auth cli" in capsys.readouterr().err
    assert main(["docs", "nope"]) == 1
    assert "no page 'nope'" in capsys.readouterr().err
    # The other commands still say how to get the extra, and where the pages are.
    assert main(["--help"]) == 1
    error = capsys.readouterr().err
    assert "pip install 'httpx-extensions[cli]'" in error
    assert f"The documentation is installed in {DOCS} " in error


def test_cli_docs_titles_of_pages_without_a_heading_first_and_no_pages_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "httpx_extensions"
    (package / "docs").mkdir(parents=True)
    (package / "docs" / "notes.md").write_text("plain text, no heading\n", encoding="utf-8")
    (package / "docs" / "later.md").write_text(
        "<!-- a comment -->\n\n# The title, after a preamble\n", encoding="utf-8"
    )
    monkeypatch.setattr(_docs, "_PACKAGE", package)
    # A page without a "# " heading is listed under its file name.
    assert _docs.pages() == {"later": "The title, after a preamble", "notes": "notes"}
    listing = CliRunner().invoke(cli, ["docs"])
    assert listing.exit_code == 0
    assert "  later  The title, after a preamble\n  notes  notes\n" in listing.output
    # No pages installed: no list, and asking for a page is an error that says so.
    monkeypatch.setattr(_docs, "_PACKAGE", tmp_path / "elsewhere" / "httpx_extensions")
    assert _docs.pages() == {}
    result = CliRunner().invoke(cli, ["docs", "cli"])
    assert result.exit_code == 1
    assert "the documentation pages are not installed" in result.output
