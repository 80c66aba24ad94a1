"""The click commands behind ``httpx-extensions`` (imported only when click and rich are).

Passwords never come from the command line (they would show in ``ps`` and in shell
history): from ``HTTPX_EXTENSIONS_PASSWORD`` or from a prompt that does not echo.
Exit statuses: 0 success, 1 failure, 2 usage error (click's own).

Each command imports what it runs (the auth and pyspnego, the demo server) when it runs, so
that ``--help`` and ``docs`` cost little more than the library's own import.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import ssl
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console  # already loaded by httpx's own CLI wherever rich is

from ..__version__ import __version__
from ._docs import docs_dir, show

__all__ = ["PASSWORD_ENV", "cli"]

PASSWORD_ENV = "HTTPX_EXTENSIONS_PASSWORD"

_F = TypeVar("_F", bound=Callable[..., Any])


def _docs_epilog(*pages: str) -> str:
    """The help texts' pointer to the installed pages, kept unwrapped (click's ``\\b``) so that
    a long path stays whole and can be copied."""
    folder = docs_dir()
    lines = ["\b", "Documentation (installed with the package; all pages: httpx-extensions docs):"]
    width = max(map(len, pages))
    for page in pages:
        where = f"  {folder / (page + '.md')}" if folder is not None else ""
        lines.append(f"  httpx-extensions docs {page:<{width}}{where}".rstrip())
    return "\n".join(lines)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_docs_epilog("cli"),
)
@click.version_option(__version__, prog_name="httpx-extensions")
def cli() -> None:
    """Connection-bound Windows authentication (NTLM, Negotiate/Kerberos) with httpx.

    Exit status: 0 success, 1 failure, 2 usage error.
    """


# -- shared options and checks -----------------------------------------------------------------


def _tls_options(function: _F) -> _F:
    function = click.option(
        "--cacert",
        type=click.Path(exists=True, dir_okay=False),
        help="Verify the server certificate against this PEM CA bundle.",
    )(function)
    return click.option(
        "--insecure",
        is_flag=True,
        help="Do not verify the server certificate (channel binding is still sent).",
    )(function)


def _verify(insecure: bool, cacert: str | None) -> ssl.SSLContext | bool:
    if insecure and cacert:
        raise click.UsageError("--insecure and --cacert exclude each other: choose one")
    if insecure:
        return False
    if cacert:
        try:
            return ssl.create_default_context(cafile=cacert)
        except (ssl.SSLError, ValueError) as exc:
            raise click.BadParameter(
                f"{cacert} is not a PEM CA bundle ({exc})", param_hint="--cacert"
            ) from None
    return True


def _check_url(url: str, param_hint: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise click.BadParameter(f"{url!r} is not a URL ({exc})", param_hint=param_hint) from None
    if parsed.scheme not in schemes or not parsed.host:
        expected = " or ".join(f"{scheme}://" for scheme in schemes)
        raise click.BadParameter(
            f"{url!r} is not an {expected} URL with a host", param_hint=param_hint
        )
    return url


def _password(user: str) -> tuple[str, str]:
    """The password for ``user`` and where it came from."""
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value, PASSWORD_ENV
    try:
        typed: str = click.prompt(f"Password for {user}", hide_input=True, err=True)
    except click.Abort:
        raise click.UsageError(
            f"no password for {user}: set {PASSWORD_ENV} or type it at the prompt"
        ) from None
    return typed, "the prompt"


def _check_user(user: str) -> str:
    if not user.strip():
        raise click.BadParameter(
            "must not be empty (DOMAIN\\name or name@domain)", param_hint="--user"
        )
    return user


# -- demo --------------------------------------------------------------------------------------


def _count(name: str, default: int, text: str) -> Callable[[_F], _F]:
    return click.option(
        name, type=click.IntRange(min=1), default=default, show_default=True, help=text
    )


def _timeout(default: float) -> Callable[[_F], _F]:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        show_default=True,
        help="Seconds for each request (httpx's timeout).",
    )


@cli.command(epilog=_docs_epilog("cli"))
@_count("--requests", 2000, "GETs that each client sends.")
@_count("--concurrency", 50, "Requests in flight at once.")
@_count("--connections", 10, "max_connections of both clients' pools.")
@click.option(
    "--url",
    help="Compare against this real server instead of the embedded one (needs --user).",
)
@click.option(
    "--user",
    help=f"DOMAIN\\name to log on as at --url; the password comes from ${PASSWORD_ENV} "
    "or a prompt.",
)
@_tls_options
@_timeout(60.0)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show a progress bar (never when stdout is not a terminal).",
)
@click.pass_context
def demo(
    ctx: click.Context,
    requests: int,
    concurrency: int,
    connections: int,
    url: str | None,
    user: str | None,
    insecure: bool,
    cacert: str | None,
    timeout: float,
    progress: bool,
) -> None:
    """Stock httpx.AsyncClient vs ExClient under concurrent NTLM load.

    Starts an IIS-like NTLM server on loopback (one pyspnego acceptor per TCP connection,
    in a process of its own) and sends the same concurrent NTLM-authenticated GETs through
    httpx.AsyncClient and through ExClient, both with the library's NTLMAuth and the same
    pool size. Prints successes, failures, HTTP exchanges per request, TCP connections and
    successful requests per second for each.

    With --url and --user, the same comparison runs against a real server; exchanges and
    connections are then counted by the client.

    Exit status: 0 when ExClient had no failure, 1 otherwise, 2 on usage errors.
    """
    from ._demo import DemoSettings, run_and_render

    verify = _verify(insecure, cacert)
    if url is None and user is not None:
        raise click.UsageError("--user goes with --url (the embedded server has its own user)")
    console = Console()
    settings = DemoSettings(
        requests=requests,
        concurrency=concurrency,
        connections=connections,
        timeout=timeout,
        progress=progress and console.is_terminal,
        verify=verify,
    )
    if url is not None:
        _check_url(url, "--url")
        if user is None:
            raise click.UsageError(
                "--url needs --user DOMAIN\\name: the demo authenticates with NTLMAuth, "
                "which takes explicit credentials"
            )
        password, _ = _password(_check_user(user))
        settings = dataclasses.replace(settings, url=url, user=user, password=password)
    try:
        status = asyncio.run(run_and_render(settings, console))
    except RuntimeError as exc:  # the demo server did not start or stopped
        raise click.ClickException(str(exc)) from exc
    # Taken by every demo test that exits 0 or 1 (tests/test_cli.py), not recorded: Python
    # 3.11's tracer loses this frame after asyncio.run() of a loop that threw into a
    # coroutine (coveragepy#2124), and lines of a frame it lost stay unrecorded.
    ctx.exit(status)  # pragma: no cover - taken, not recorded (see above)


# -- probe -------------------------------------------------------------------------------------


@cli.command(epilog=_docs_epilog("cli", "auth"))
@click.argument("url")
@click.option(
    "--user",
    help=f"DOMAIN\\name (or name@domain) to log on as; the password comes from "
    f"${PASSWORD_ENV} or a prompt. Default: the current user (Kerberos ticket cache, "
    "or SSPI on Windows).",
)
@click.option("--ntlm", "force_ntlm", is_flag=True, help="Use NTLM only (needs --user).")
@click.option(
    "--negotiate",
    "force_negotiate",
    is_flag=True,
    help="Use Negotiate: Kerberos, NTLM inside SPNEGO as the fallback (the default).",
)
@click.option(
    "--kerberos", "force_kerberos", is_flag=True, help="Use Kerberos only: NTLM is refused."
)
@click.option(
    "--spn-host",
    metavar="HOST",
    help="Host part of the SPN (HTTP/HOST) when it differs from the URL's (a CNAME, an IP).",
)
@click.option(
    "--proxy",
    metavar="URL",
    help="Send the requests through this proxy (http://, https://, or socks5:// with the "
    "socks extra). A proxy's 407 is answered with the same credentials; its legs are "
    "reported apart from the server's.",
)
@click.option(
    "--no-channel-binding",
    is_flag=True,
    help="Do not bind the handshake to the TLS certificate (HTTPS).",
)
@_tls_options
@_timeout(30.0)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def probe(
    ctx: click.Context,
    url: str,
    user: str | None,
    force_ntlm: bool,
    force_negotiate: bool,
    force_kerberos: bool,
    spn_host: str | None,
    proxy: str | None,
    no_channel_binding: bool,
    insecure: bool,
    cacert: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Diagnose an endpoint protected by NTLM or Negotiate/Kerberos.

    Sends one authenticated GET through ExClient and reports: the schemes the server
    offers, the mechanism chosen and why (Kerberos, or NTLM and why not Kerberos), the SPN,
    whether channel binding was sent, each leg (status, conn_id, token sizes in bytes; never
    a token or a header value) and the round trips taken. Then a second request on the same
    connection without a token shows whether the server keeps the connection authenticated
    ("persistent") or challenges every request.

    Exit status: 0 when the final answer is 200-399, 1 when authentication failed (or the
    server could not be reached), 2 on usage errors.
    """
    from ._probe import ProbeSettings, run_probe
    from ._probe import render as render_probe

    _check_url(url, "URL")
    verify = _verify(insecure, cacert)
    if proxy is not None:
        _check_url(proxy, "--proxy", ("http", "https", "socks5", "socks5h"))
    forced = [
        name
        for name, flag in (
            ("ntlm", force_ntlm),
            ("negotiate", force_negotiate),
            ("kerberos", force_kerberos),
        )
        if flag
    ]
    if len(forced) > 1:
        raise click.UsageError(
            "--ntlm, --negotiate and --kerberos exclude each other: give one at most"
        )
    if force_ntlm and user is None:
        raise click.UsageError(
            "--ntlm needs --user DOMAIN\\name: NTLM is only tried with explicit credentials "
            "(use --negotiate for the current user)"
        )
    password: str | None = None
    source = "none"
    if user is not None:
        password, source = _password(_check_user(user))
    settings = ProbeSettings(
        url=url,
        user=user,
        password=password,
        password_source=source,
        force=forced[0] if forced else None,
        spn_host=spn_host,
        channel_binding=not no_channel_binding,
        verify=verify,
        proxy=proxy,
        timeout=timeout,
    )
    report = asyncio.run(run_probe(settings))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in render_probe(report):
            click.echo(line)
    ctx.exit(0 if report.ok else 1)


# -- docs --------------------------------------------------------------------------------------


@cli.command()
@click.argument("page", required=False)
@click.option("--path", "path_only", is_flag=True, help="Print the file's path, not its text.")
def docs(page: str | None, path_only: bool) -> None:
    """List the documentation pages installed with the package, or print PAGE.

    PAGE is a name from the list (auth, cli, pinning, ...). The pages are Markdown; with
    --path, the file's path (or the folder's, without PAGE) for a viewer or an editor.
    Works without the cli extra too.
    """
    try:
        show(page, path_only, sys.stdout)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
