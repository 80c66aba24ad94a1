"""The demo's server: an IIS-like NTLM server in a process of its own, driven over a pipe.

``python -m httpx_extensions._cli._serve`` writes a user file (the demo account, hashes
precomputed), starts :class:`~httpx_extensions.testing.IISLikeServer` on loopback and
prints one JSON line, ``{"url": ...}``. Then, for each line it reads: ``stats`` prints the
counters as one JSON line, ``reset`` zeroes them and prints them. End of input stops it.

Why a process: the server's CPU (one pyspnego acceptor per TCP connection) would otherwise
compete with the clients under test for one interpreter lock, and skew what the demo
measures. Its only channel besides loopback HTTP is this pipe.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..testing import IISLikeServer, write_user_file

__all__ = [
    "DEMO_DOMAIN",
    "DEMO_PASSWORD",
    "DEMO_USER",
    "ServerProcess",
    "serve",
    "server_process",
]

DEMO_DOMAIN = "EXAMPLE"
DEMO_USER = "demo"
DEMO_PASSWORD = "Demo-Passw0rd"


def serve(commands: IO[str], out: IO[str]) -> int:
    """Run the server until ``commands`` ends; answer each command line on ``out``."""

    def answer(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    with tempfile.TemporaryDirectory(prefix="httpx-extensions-demo-") as tmp:
        users = write_user_file(
            Path(tmp, "users.txt"), [(DEMO_DOMAIN, DEMO_USER, DEMO_PASSWORD)], store_hashes=True
        )
        with IISLikeServer(user_file=users) as server:
            answer({"url": server.url})
            for line in commands:
                command = line.strip()
                if command == "reset":
                    server.reset()
                elif command != "stats":
                    answer({"error": f"unknown command {command!r} (stats, reset)"})
                    continue
                answer(
                    {
                        "requests_total": server.requests_total,
                        "connections_opened": server.connections_opened,
                        "handshakes_completed": server.handshakes_completed,
                        "errors": len(server.errors),
                    }
                )
    return 0


class ServerProcess:
    """The parent's side of a running :func:`serve` child: its URL, and its counters."""

    def __init__(self, process: subprocess.Popen[str], stdin: IO[str], stdout: IO[str]) -> None:
        self._process = process
        self._stdin = stdin
        self._stdout = stdout
        self.url = str(self._read()["url"])

    def ask(self, command: str) -> dict[str, Any]:
        """Send ``stats`` or ``reset``; return the counters the server answers with."""
        self._stdin.write(command + "\n")
        self._stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        line = self._stdout.readline()
        if not line:
            status = self._process.wait()
            raise RuntimeError(f"the demo server stopped (exit status {status})")
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"the demo server: {message['error']}")
        return message


@contextlib.contextmanager
def server_process(module: str = __name__) -> Iterator[ServerProcess]:
    """Run :func:`serve` in a child process for as long as the ``with`` block.

    Args:
        module: What the child runs with ``python -m`` (this module).

    Raises:
        RuntimeError: The child did not start or stopped answering (its stderr, which is
            the parent's, says why).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    stdin, stdout = process.stdin, process.stdout
    assert stdin is not None
    assert stdout is not None
    try:
        yield ServerProcess(process, stdin, stdout)
    finally:
        # End of input stops the server; it has 15 s to close its connections.
        with contextlib.suppress(OSError):  # the child is gone already
            stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - would be a bug in serve()
            process.kill()
            process.wait()
        stdout.close()


if __name__ == "__main__":
    sys.exit(serve(sys.stdin, sys.stdout))
