"""A real Apache 2.4 with mod_auth_gssapi and gss-ntlmssp on loopback: connection-bound NTLM.

Why a second NTLM server next to ``IISLikeServer``: this one is not ours. It is what many
Linux sites run in front of their services (``GssapiConnectionBound On``), it answers a failed
SPNEGO logon with a reject token as a real acceptor does, and it is written in C, so a load
test measures the client rather than a pure-Python server.

:class:`ApacheNTLMServer` writes a private configuration into a temporary directory (never
the system's ``/etc/apache2``), listens on 127.0.0.1 on a free port, runs ``apache2`` in the
foreground as a child process, and stops it on exit. Credentials come from an
``NTLM_USER_FILE`` (``DOMAIN:USER:PASSWORD`` lines), which gss-ntlmssp reads in the server
process. Every location needs an NTLM logon (raw NTLM under the ``Negotiate`` scheme, or
NTLM inside SPNEGO); the response carries the authenticated user in ``X-Remote-User`` and
the body ``ok``. The access log records the client port and status of every exchange, so a
test can count exchanges (:meth:`exchanges`) and TCP connections (:meth:`connections`).

:func:`apache_unavailable` says why it cannot run (packages missing: run
``scripts/install-apache``), so fixtures can skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["ApacheNTLMServer", "apache_unavailable"]

_MODULES = Path("/usr/lib/apache2/modules")
_NTLMSSP_MECH = Path("/etc/gss/mech.d/mech.ntlmssp.conf")
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

_CONFIG = """\
ServerRoot "{root}"
ServerName 127.0.0.1
{user}
Listen 127.0.0.1:{port}
PidFile "{root}/httpd.pid"
ErrorLog "{root}/error.log"
LogLevel warn
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authn_core_module {modules}/mod_authn_core.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authz_user_module {modules}/mod_authz_user.so
LoadModule auth_gssapi_module {modules}/mod_auth_gssapi.so
LoadModule headers_module {modules}/mod_headers.so
LoadModule mime_module {modules}/mod_mime.so
LoadModule dir_module {modules}/mod_dir.so
TypesConfig /etc/mime.types
DocumentRoot "{root}/htdocs"
DirectoryIndex index.txt
LogFormat "%{{remote}}p %>s" exchanges
CustomLog "{root}/access.log" exchanges
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 60
# One process: gss-ntlmssp keeps each handshake in the process that started it.
ServerLimit 1
StartServers 1
ThreadsPerChild {threads}
MaxRequestWorkers {threads}
MinSpareThreads 1
MaxSpareThreads {threads}
<Location />
    AuthType GSSAPI
    AuthName "NTLM"
    GssapiAllowedMech ntlmssp
    GssapiConnectionBound On
    Require valid-user
    Header always set X-Remote-User "expr=%{{REMOTE_USER}}"
</Location>
"""


def _find(tool: str) -> str | None:
    return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS]))


def _ntlmssp_library_present() -> bool:
    # The mechanism file names the plugin library (a removed package leaves the file).
    for line in _NTLMSSP_MECH.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.lstrip().startswith("#"):
            return Path(fields[2]).exists()
    return False


def apache_unavailable() -> str | None:
    """Why the Apache NTLM server cannot run here, or None when it can."""
    missing = []
    if _find("apache2") is None:
        missing.append("apache2")
    if not (_MODULES / "mod_auth_gssapi.so").exists():
        missing.append("libapache2-mod-auth-gssapi")
    if not _NTLMSSP_MECH.exists() or not _ntlmssp_library_present():
        missing.append("gss-ntlmssp")
    if missing:
        return f"{', '.join(missing)} not installed; run scripts/install-apache (Debian)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApacheNTLMServer:
    """Apache + mod_auth_gssapi + gss-ntlmssp on ``127.0.0.1``, connection-bound NTLM.

    Args:
        user_file: An ``NTLM_USER_FILE`` (``DOMAIN:USER:PASSWORD`` lines).
        threads: Worker threads of the single server process.
    """

    def __init__(self, user_file: str | os.PathLike[str], *, threads: int = 64) -> None:
        reason = apache_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        self._user_file = Path(user_file)
        self._threads = threads
        self._process: subprocess.Popen[bytes] | None = None
        self._root: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The Apache parent process (its one worker process is a child of it)."""
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self) -> ApacheNTLMServer:
        root = Path(tempfile.mkdtemp(prefix="httpx-ext-apache-"))
        self._root = root
        (root / "htdocs").mkdir()
        (root / "htdocs" / "index.txt").write_text("ok")
        user_file = root / "users.txt"
        shutil.copyfile(self._user_file, user_file)
        running_as_root = os.geteuid() == 0
        if running_as_root:
            # Apache will not serve as root: its workers run as nobody, who must read these.
            root.chmod(0o755)
            (root / "htdocs").chmod(0o755)
            user_file.chmod(0o644)
        self.port = _free_port()
        (root / "httpd.conf").write_text(
            _CONFIG.format(
                root=root,
                port=self.port,
                modules=_MODULES,
                threads=self._threads,
                user="User nobody\nGroup nogroup" if running_as_root else "",
            )
        )
        env = {**os.environ, "NTLM_USER_FILE": str(user_file)}
        apache = _find("apache2")
        assert apache is not None
        self._process = subprocess.Popen(
            [apache, "-f", str(root / "httpd.conf"), "-DFOREGROUND"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            if self._process.poll() is not None:
                error = (
                    self._process.stderr.read().decode(errors="replace")
                    if self._process.stderr
                    else ""
                )
                log = (root / "error.log").read_text() if (root / "error.log").exists() else ""
                self.stop()
                raise RuntimeError(f"apache2 exited at start-up: {error}{log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("apache2 did not start listening within 10 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> ApacheNTLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # What the access log saw.

    def _log(self) -> list[tuple[str, int]]:
        assert self._root is not None
        path = self._root / "access.log"
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            port, status = line.split()
            entries.append((port, int(status)))
        return entries

    def logged(self, at_least: int = 0, wait: float = 5.0) -> list[tuple[str, int]]:
        """(client port, status) of every exchange, in the order Apache logged them.

        Apache writes a line after it has sent the response, so a client can have its answer
        before the line is there: with ``at_least``, wait (up to ``wait`` seconds) until that
        many lines are.
        """
        deadline = time.monotonic() + wait
        entries = self._log()
        while len(entries) < at_least and time.monotonic() < deadline:
            time.sleep(0.01)
            entries = self._log()
        return entries

    def statuses(self, at_least: int = 0) -> list[int]:
        return [status for _, status in self.logged(at_least)]

    def exchanges(self, at_least: int = 0) -> int:
        """HTTP exchanges (requests answered), 401s included."""
        return len(self.logged(at_least))

    def connections(self, at_least_exchanges: int = 0) -> int:
        """TCP connections that carried a request (distinct client ports)."""
        return len({port for port, _ in self.logged(at_least_exchanges)})

    def reset_log(self) -> None:
        assert self._root is not None
        (self._root / "access.log").write_text("")
