"""``httpx-extensions demo``: one NTLM workload through ``httpx.AsyncClient`` and ``ExClient``.

Both clients send the same concurrent, NTLM-authenticated GETs through the same pool size,
with the library's own ``NTLMAuth``, to an IIS-like server (one pyspnego acceptor per TCP
connection, in a process of its own) or to a real one. Stock httpx hands a connection back
to its pool between the legs of a handshake, so under concurrency the next leg goes out on
another connection and fails; ExClient keeps every leg on its connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._auth import NTLMAuth
from .._client import ExClient
from .._extensions import CONN_ID
from ._serve import DEMO_DOMAIN, DEMO_PASSWORD, DEMO_USER, server_process

__all__ = ["ClientRun", "DemoSettings", "render", "run_and_render", "run_demo"]

_CLIENTS: tuple[tuple[str, type[httpx.AsyncClient]], ...] = (
    ("httpx.AsyncClient", httpx.AsyncClient),
    ("ExClient", ExClient),
)


@dataclass(frozen=True)
class DemoSettings:
    requests: int
    concurrency: int
    connections: int
    timeout: float
    progress: bool
    # A real server: its URL and credentials (None: the embedded IIS-like server).
    url: str | None = None
    user: str = f"{DEMO_DOMAIN}\\{DEMO_USER}"
    password: str = field(default=DEMO_PASSWORD, repr=False)
    verify: ssl.SSLContext | bool = True


@dataclass
class ClientRun:
    """What one client achieved."""

    name: str
    ok: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    exchanges: int = 0
    connections: int = 0

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0


class _ClientCounts:
    """Counts a client makes of itself when the server cannot be asked: every response an
    event hook sees (401 legs included), and every connection (ExClient's conn_id, or the
    network stream of a stock httpx response, kept referenced so that its id is not reused)."""

    def __init__(self) -> None:
        self.exchanges = 0
        self._connections: set[object] = set()

    async def __call__(self, response: httpx.Response) -> None:
        self.exchanges += 1
        conn_id = response.extensions.get(CONN_ID)
        key = conn_id if conn_id is not None else response.extensions.get("network_stream")
        # Every response the demo's clients read came over a socket: ExClient's carry a
        # conn_id, httpx's a network_stream.
        if key is not None:  # pragma: no branch - one of the two is always there
            self._connections.add(key)

    @property
    def connections(self) -> int:
        return len(self._connections)


async def run_and_render(settings: DemoSettings, console: Console) -> int:
    """Run the demo and print its table; the exit status: 0 when ExClient had no failure."""
    runs = await run_demo(settings, console)
    render(settings, runs, console)
    return 0 if runs[-1].failed == 0 else 1


async def run_demo(settings: DemoSettings, console: Console) -> list[ClientRun]:
    """Run the workload through each client in turn; the server counts when it is ours."""
    progress = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        disable=not settings.progress,
    )
    runs = []
    with progress:
        if settings.url is None:
            with server_process() as server:
                for name, factory in _CLIENTS:
                    server.ask("reset")
                    run = await _run_client(
                        name, factory, server.url + "/data", settings, progress, None
                    )
                    stats = server.ask("stats")
                    run.exchanges = int(stats["requests_total"])
                    run.connections = int(stats["connections_opened"])
                    runs.append(run)
        else:
            for name, factory in _CLIENTS:
                counts = _ClientCounts()
                run = await _run_client(name, factory, settings.url, settings, progress, counts)
                run.exchanges, run.connections = counts.exchanges, counts.connections
                runs.append(run)
    return runs


async def _run_client(
    name: str,
    factory: type[httpx.AsyncClient],
    url: str,
    settings: DemoSettings,
    progress: Progress,
    counts: _ClientCounts | None,
) -> ClientRun:
    run = ClientRun(name)
    task = progress.add_task(name, total=settings.requests, failed=0)

    def advance() -> None:
        progress.update(task, advance=1, failed=run.failed)

    async with factory(
        limits=httpx.Limits(max_connections=settings.connections),
        timeout=settings.timeout,
        verify=settings.verify,
        event_hooks={"response": [counts]} if counts is not None else None,
    ) as client:
        await _workload(
            client, url, NTLMAuth(settings.user, settings.password), run, settings, advance
        )
    return run


async def _workload(
    client: httpx.AsyncClient,
    url: str,
    auth: httpx.Auth,
    run: ClientRun,
    settings: DemoSettings,
    advance: Callable[[], None],
) -> None:
    queue = iter(range(settings.requests))

    async def worker() -> None:
        for _ in queue:
            try:
                response = await client.get(url, auth=auth)
            except httpx.HTTPError as exc:
                run.failed += 1
                run.failures[type(exc).__name__] += 1
            else:
                if response.status_code < 400:
                    run.ok += 1
                else:
                    run.failed += 1
                    run.failures[f"HTTP {response.status_code}"] += 1
            advance()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
    run.elapsed = time.perf_counter() - started


def render(settings: DemoSettings, runs: list[ClientRun], console: Console) -> None:
    """The comparison table, where its counts come from, the ratio and the failures."""

    def say(text: str = "") -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    say()
    say(
        f"{settings.requests} NTLM-authenticated GETs, concurrency {settings.concurrency}, "
        f"max_connections={settings.connections}, NTLMAuth in both clients"
    )
    if settings.url is None:
        say("against the IIS-like server on loopback (one NTLM acceptor per TCP connection)")
    else:
        say(f"against {settings.url} as {settings.user}")
    say()
    table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False)
    table.add_column("client")
    for heading in ("ok", "failed", "connections", "exchanges/req", "ok req/s"):
        table.add_column(heading, justify="right")
    for run in runs:
        table.add_row(
            run.name,
            str(run.ok),
            str(run.failed),
            str(run.connections),
            f"{run.exchanges / settings.requests:.2f}",
            f"{run.ok_per_second:.0f}",
        )
    console.print(table)
    say()
    if settings.url is None:
        say(
            "exchanges and connections: the server's count (every HTTP exchange, 401 legs "
            "included; every TCP connection it accepted)."
        )
    else:
        say(
            "exchanges and connections: counted by the client, not the server (event hooks "
            "see every response, 401 legs included; connections are distinct conn_ids for "
            "ExClient, distinct sockets for httpx.AsyncClient)."
        )
    stock, ours = runs
    if stock.ok_per_second > 0:
        ratio = ours.ok_per_second / stock.ok_per_second
        say(f"ExClient/httpx: {ratio:.1f}x the successful requests per second.")
    else:
        say("ExClient/httpx: httpx.AsyncClient completed no request successfully.")
    for run in runs:
        if run.failures:
            kinds = ", ".join(f"{count} x {kind}" for kind, count in run.failures.most_common())
            say(f"{run.name} failures: {kinds}")
