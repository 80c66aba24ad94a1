"""A private MIT Kerberos realm on loopback, for end-to-end Negotiate/Kerberos tests.

:class:`LoopbackKDC` builds a throw-away realm in a temporary directory: its own
``krb5.conf`` (the only KDC is ``127.0.0.1:<port>``, every DNS lookup switched off), its own
``kdc.conf``, a database made with ``kdb5_util``, principals made with ``kadmin.local``, a
keytab for the HTTP service, and a ``krb5kdc -n`` process in the foreground that listens on
127.0.0.1 only.  While it runs it owns the process-wide Kerberos environment variables, so
both the IIS-like server (acceptor: keytab from ``KRB5_KTNAME``) and the client under test
(initiator: ticket cache from ``KRB5CCNAME``) use the private realm and nothing else.

MIT krb5 reads these variables whenever it creates a ``krb5_context``, which python-gssapi
and pyspnego do for every credential and security context, so changing them at run time
takes effect for the next handshake.

:func:`isolated_kerberos_env` is the same isolation without a KDC: a ``krb5.conf`` with no
default realm and no DNS lookups, an empty ticket cache and no keytab.  With the Python
``gssapi`` package installed, a Negotiate client that is given ``DOMAIN\\user`` and a
password *tries Kerberos first* and looks up the KDC of the default realm of the machine's
``/etc/krb5.conf`` (Debian's ``krb5-config`` package writes one naming ``ATHENA.MIT.EDU``),
which sends DNS queries off the machine.  Tests that do not want Kerberos run inside it.

Nothing here needs pytest; :func:`kerberos_unavailable` says why Kerberos tests cannot run
(missing MIT binaries or Python bindings) so a fixture can skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

__all__ = [
    "KRB5_ENV_VARS",
    "KerberosSetupError",
    "LoopbackKDC",
    "isolated_kerberos_env",
    "kerberos_unavailable",
]

# Every variable through which MIT krb5 could find a configuration, a ticket or a key.
KRB5_ENV_VARS = (
    "KRB5_CONFIG",
    "KRB5_KDC_PROFILE",
    "KRB5_KTNAME",
    "KRB5_CLIENT_KTNAME",
    "KRB5CCNAME",
    "KRB5RCACHEDIR",
    "KRB5RCACHETYPE",
    "KRB5_TRACE",
)

# Debian puts the KDC tools in /usr/sbin, which is not on PATH for every user.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/lib/mit/sbin")
_BINARIES = ("kdb5_util", "kadmin.local", "krb5kdc", "kinit")

_STARTUP_TIMEOUT = 10.0


class KerberosSetupError(RuntimeError):
    """The realm could not be built or the KDC did not start; the message has its log."""


class _PortTaken(KerberosSetupError):
    """krb5kdc could not bind its port."""


def _find(binary: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN_DIRS])
    return shutil.which(binary, path=path)


def kerberos_unavailable() -> str | None:
    """Why Kerberos tests cannot run here, or None when they can."""
    missing = [b for b in _BINARIES if _find(b) is None]
    if missing:
        return (
            f"MIT Kerberos tools not found ({', '.join(missing)}); "
            "run scripts/install-kerberos (Debian: krb5-kdc krb5-admin-server krb5-user)"
        )
    try:
        import gssapi  # noqa: F401
        import krb5  # noqa: F401
        from spnego._gss import GSSAPIProxy
    except ImportError as exc:
        return (
            f"Python Kerberos bindings missing ({exc}); "
            "run scripts/install-kerberos (pip: gssapi, krb5; build needs libkrb5-dev)"
        )
    if "kerberos" not in GSSAPIProxy.available_protocols():
        return "pyspnego does not offer Kerberos through GSSAPI on this machine"
    return None


@contextlib.contextmanager
def _environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or unset, for None) environment variables; restore the old values after."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def isolated_kerberos_env() -> Iterator[Path]:
    """Kerberos that can reach nothing: no default realm, no DNS, no tickets, no keys.

    A client that tries Kerberos fails at once, locally, and SPNEGO falls back to NTLM.
    Yields the private directory.  Process-wide: use it from a session-scoped fixture.
    """
    with tempfile.TemporaryDirectory(prefix="krb5-isolated-") as name:
        directory = Path(name)
        config = directory / "krb5.conf"
        config.write_text(
            "[libdefaults]\n"
            "    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n"
            "    dns_canonicalize_hostname = false\n"
            "    rdns = false\n",
            encoding="ascii",
        )
        with _environ(
            {
                "KRB5_CONFIG": str(config),
                "KRB5_KDC_PROFILE": str(directory / "kdc.conf"),  # does not exist
                "KRB5_KTNAME": f"FILE:{directory / 'none.keytab'}",  # does not exist
                "KRB5_CLIENT_KTNAME": f"FILE:{directory / 'none.client.keytab'}",
                "KRB5CCNAME": f"FILE:{directory / 'none.ccache'}",  # does not exist
                "KRB5RCACHEDIR": str(directory),
                "KRB5RCACHETYPE": None,
                "KRB5_TRACE": None,
            }
        ):
            yield directory


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the KDC listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise KerberosSetupError("no free loopback port for the KDC")


class LoopbackKDC:
    """An MIT KDC for a private realm, on 127.0.0.1, with a user and an HTTP service.

    ``with LoopbackKDC() as kdc:`` builds the realm, starts ``krb5kdc`` and sets
    ``KRB5_CONFIG``, ``KRB5_KDC_PROFILE``, ``KRB5_KTNAME`` (the service keytab, for acceptors),
    ``KRB5_CLIENT_KTNAME`` (none), ``KRB5CCNAME`` (``kdc.ccache``, empty until :meth:`kinit`)
    and ``KRB5RCACHEDIR``.  On exit the KDC is stopped, the variables are restored and the
    directory is removed.  The variables are process-wide: one realm per test session.

    Principals: every ``(name, password)`` in ``users`` and ``HTTP/<host>`` (random key, in
    the keytab) for every host in ``service_hosts``.  The default is ``alice`` and
    ``HTTP/localhost`` only, so a client has to use the SPN ``HTTP@localhost``.
    """

    def __init__(
        self,
        *,
        realm: str = "HTTPX-EXT.TEST",
        users: Mapping[str, str] | None = None,
        service_hosts: tuple[str, ...] = ("localhost",),
        service: str = "HTTP",
    ) -> None:
        self.realm = realm
        self.users = dict(users if users is not None else {"alice": "Al1ce-pw"})
        self.service = service
        self.service_hosts = service_hosts
        self.port = 0
        self.directory: Path | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._env: contextlib.ExitStack | None = None

    # -- paths -------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if self.directory is None:
            raise RuntimeError("the KDC is not started")
        return self.directory / name

    @property
    def krb5_conf(self) -> Path:
        return self._path("krb5.conf")

    @property
    def keytab(self) -> Path:
        """Keytab of the service principals (what ``KRB5_KTNAME`` points at)."""
        return self._path("service.keytab")

    @property
    def ccache(self) -> Path:
        """The default ticket cache (what ``KRB5CCNAME`` points at)."""
        return self._path("default.ccache")

    @property
    def log_file(self) -> Path:
        return self._path("kdc.log")

    def principal(self, name: str) -> str:
        """``name@REALM``."""
        return f"{name}@{self.realm}"

    def service_principal(self, host: str = "localhost") -> str:
        return f"{self.service}/{host}@{self.realm}"

    def env(self) -> dict[str, str]:
        """The environment the realm needs (also what is set while it runs)."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self._path("kdc.conf")),
            "KRB5_KTNAME": f"FILE:{self.keytab}",
            "KRB5_CLIENT_KTNAME": f"FILE:{self._path('none.client.keytab')}",
            "KRB5CCNAME": f"FILE:{self.ccache}",
            "KRB5RCACHEDIR": str(self.directory),
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LoopbackKDC:
        reason = kerberos_unavailable()
        if reason is not None:
            raise KerberosSetupError(reason)
        if self._tempdir is not None:
            raise RuntimeError("a LoopbackKDC can be started only once")
        self._tempdir = tempfile.TemporaryDirectory(prefix="krb5-kdc-")
        self.directory = Path(self._tempdir.name)
        try:
            self.port = _free_port()
            self._write_config()
            self._env = contextlib.ExitStack()
            self._env.enter_context(
                _environ({**self.env(), "KRB5RCACHETYPE": None, "KRB5_TRACE": None})
            )
            self._create_database()
            for attempt in range(3):
                try:
                    self._start_kdc()
                    break
                except _PortTaken:
                    # Another process took the port between _free_port() and krb5kdc's bind.
                    if attempt == 2:
                        raise
                    self.port = _free_port()
                    self._write_config()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        env, self._env = self._env, None
        if env is not None:
            env.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> LoopbackKDC:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- building the realm ------------------------------------------------------------------

    def _write_config(self) -> None:
        address = f"127.0.0.1:{self.port}"
        realm = self.realm
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"    default_realm = {realm}\n"
            "    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n"
            "    dns_canonicalize_hostname = false\n"
            "    rdns = false\n"
            "    udp_preference_limit = 1\n"  # TCP: no UDP retry timers on a busy machine
            "    ticket_lifetime = 1h\n"
            "    forwardable = true\n"
            "[realms]\n"
            f"    {realm} = {{\n"
            f"        kdc = {address}\n"
            "    }\n"
            "[domain_realm]\n"
            f"    localhost = {realm}\n"
            f"    127.0.0.1 = {realm}\n",
            encoding="ascii",
        )
        d = self.directory
        self._path("kdc.conf").write_text(
            "[kdcdefaults]\n"
            f"    kdc_listen = {address}\n"
            f"    kdc_tcp_listen = {address}\n"
            "[realms]\n"
            f"    {realm} = {{\n"
            f"        database_name = {d}/principal\n"
            f"        key_stash_file = {d}/stash\n"
            f"        acl_file = {d}/kadm5.acl\n"
            f"        kdc_listen = {address}\n"
            f"        kdc_tcp_listen = {address}\n"
            "        max_life = 2h\n"
            "        supported_enctypes = aes256-cts-hmac-sha1-96:normal "
            "aes128-cts-hmac-sha1-96:normal\n"
            "    }\n"
            "[logging]\n"
            f"    kdc = FILE:{d}/kdc.log\n"
            f"    admin_server = FILE:{d}/kadmin.log\n",
            encoding="ascii",
        )
        self._path("kadm5.acl").write_text("", encoding="ascii")

    def _run(self, args: list[str], *, stdin: str = "", what: str) -> str:
        binary = _find(args[0])
        assert binary is not None  # checked by kerberos_unavailable()
        result = subprocess.run(
            [binary, *args[1:]],
            input=stdin.encode("utf-8"),
            capture_output=True,
            timeout=30,
            check=False,
        )
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode != 0:
            raise KerberosSetupError(f"{what} failed ({result.returncode}): {output.strip()}")
        return output

    def _create_database(self) -> None:
        # -s writes the stash file so krb5kdc starts without asking for the master password,
        # which is random and forgotten: the database lives as long as the directory.
        master = os.urandom(12).hex()
        self._run(
            ["kdb5_util", "create", "-s", "-r", self.realm],
            stdin=f"{master}\n{master}\n",
            what="kdb5_util create",
        )
        commands = []
        for user, password in self.users.items():
            # Inside kadmin.local's stdin, so the password is in no process's arguments.
            # +requires_preauth, as Active Directory does: a wrong password is refused by the
            # KDC ("Preauthentication failed") instead of failing to decrypt the AS-REP.
            commands.append(f"addprinc +requires_preauth -pw {password} {user}")
        for host in self.service_hosts:
            name = f"{self.service}/{host}"
            commands.append(f"addprinc -randkey {name}")
            commands.append(f"ktadd -k {self.keytab} {name}")
        # kadmin.local reads its commands from stdin: one process for all of them.
        output = self._run(
            ["kadmin.local", "-r", self.realm],
            stdin="".join(f"{c}\n" for c in commands),
            what="kadmin.local",
        )
        if "error" in output.lower() or not self.keytab.is_file():
            raise KerberosSetupError(f"kadmin.local could not create the principals: {output}")

    def _start_kdc(self) -> None:
        binary = _find("krb5kdc")
        assert binary is not None
        log = self._path("krb5kdc.out").open("wb")
        with log:
            # -n: stay in the foreground, so stop() can terminate it by its process id.
            self._process = subprocess.Popen(
                [binary, "-n", "-r", self.realm],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # krb5kdc logs "commencing operation" once it has bound every socket and serves.
        # (A connect() probe is not enough: it can reach another process that holds the port,
        # while krb5kdc is about to fail with "Address already in use".)
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while True:
            logs = self._logs()
            if self._process.poll() is not None:
                self._process = None
                if "in use" in logs:
                    raise _PortTaken(f"krb5kdc could not bind {self.port}:\n{logs}")
                raise KerberosSetupError(f"krb5kdc exited at start:\n{logs}")
            if "commencing operation" in logs:
                return
            if time.monotonic() > deadline:
                raise KerberosSetupError(f"krb5kdc did not start on {self.port}:\n{logs}")
            time.sleep(0.01)

    def _logs(self) -> str:
        parts = []
        for name in ("krb5kdc.out", "kdc.log"):
            path = self._path(name)
            if path.is_file():
                parts.append(path.read_text("utf-8", "replace"))
        return "\n".join(parts)

    # -- clients -----------------------------------------------------------------------------

    def kinit(self, user: str, password: str | None = None, ccache: Path | None = None) -> Path:
        """Get a TGT for ``user`` into ``ccache`` (default: the default ccache) with ``kinit``.

        The password goes to kinit on stdin, never on its command line.
        """
        if password is None:
            password = self.users[user]
        target = ccache if ccache is not None else self.ccache
        self._run(
            ["kinit", "-c", f"FILE:{target}", self.principal(user) if "@" not in user else user],
            stdin=f"{password}\n",
            what=f"kinit {user}",
        )
        return target

    def kdestroy(self, ccache: Path | None = None) -> None:
        """Remove a ticket cache (the default one unless given)."""
        target = ccache if ccache is not None else self.ccache
        target.unlink(missing_ok=True)
