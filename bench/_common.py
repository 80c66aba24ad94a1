"""Shared helpers for the benchmarks: a private nginx on loopback, stub_status
reading, and machine facts.

nginx runs from a temporary prefix directory with its own config (never the
system one), bound to 127.0.0.1 on a free port, one worker process, keep-alive
connections that are never closed by the server during a run, no access log.
``location /`` answers ``200 "ok"`` and ``/nginx_status`` is ``stub_status``,
whose ``accepts`` counter tells how many TCP connections clients opened.

Run ``python bench/_common.py serve`` to start the same server by hand (it
prints its URL and stays up until Ctrl-C).
"""

from __future__ import annotations

import atexit
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent

NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 16384;
    multi_accept on;
}}

http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server_tokens off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    server {{
        listen 127.0.0.1:{port} backlog=4096;

        location = /nginx_status {{
            stub_status;
        }}

        location / {{
            default_type text/plain;
            return 200 "ok";
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_nginx() -> str:
    """Return the nginx binary, installing it with apt-get if it is missing."""
    binary = find_nginx()
    if binary is None:
        if os.name != "posix" or shutil.which("apt-get") is None:
            sys.exit("nginx not found and apt-get is not available: install nginx first")
        sudo: list[str] = []
        if os.geteuid() != 0:
            if shutil.which("sudo") is None:
                sys.exit("nginx not found; install it (apt-get install nginx-light) or run as root")
            sudo = ["sudo", "-n"]
        print("nginx not found: installing it with apt-get ...", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        for package in ("nginx-light", "nginx"):
            done = subprocess.run(
                [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                env=env,
            )
            if done.returncode == 0 and find_nginx():
                break
        binary = find_nginx()
        if binary is None:
            sys.exit("could not install nginx with apt-get")
        # A Debian install may start the system nginx on port 80; it is not used here.
    info = nginx_build_info(binary)
    if "--with-http_stub_status_module" not in info:
        sys.exit(f"{binary} lacks the stub_status module (needed to count connections)")
    return binary


def nginx_build_info(binary: str) -> str:
    done = subprocess.run([binary, "-V"], capture_output=True, text=True)
    return done.stdout + done.stderr


def nginx_version(binary: str) -> str:
    match = re.search(r"nginx/(\S+)", nginx_build_info(binary))
    return match.group(1) if match else "unknown"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Status:
    active: int
    accepts: int
    handled: int
    requests: int


def read_status(base_url: str, timeout: float = 5.0) -> Status:
    """Read stub_status on a fresh connection (``Connection: close``).

    Every read opens one connection itself, so it counts once in ``accepts``
    and once in ``requests``; see :func:`opened_between`.
    """
    req = urllib.request.Request(base_url + "/nginx_status", headers={"Connection": "close"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    active = int(re.search(r"Active connections:\s*(\d+)", text).group(1))
    accepts, handled, requests = map(int, re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", text).groups())
    return Status(active, accepts, handled, requests)


def opened_between(before: Status, after: Status) -> tuple[int, int]:
    """Connections accepted and requests served between two reads, not
    counting the connection and request of the later read itself."""
    return after.accepts - before.accepts - 1, after.requests - before.requests - 1


def cpu_seconds_of(pid: int | None) -> float | None:
    """user+sys CPU seconds of another process (Linux /proc), or None."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, ValueError, IndexError):
        return None


class Nginx:
    """A private nginx on 127.0.0.1; use as a context manager."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or ensure_nginx()
        self.version = nginx_version(self.binary)
        self.prefix: str | None = None
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.base_url = ""
        self.worker_pid: int | None = None

    def start(self, attempts: int = 5) -> Nginx:
        self.prefix = tempfile.mkdtemp(prefix="bench-nginx-")
        os.chmod(self.prefix, 0o755)
        atexit.register(self.stop)
        last_error = ""
        for _ in range(attempts):
            self.port = free_port()
            conf = Path(self.prefix, "nginx.conf")
            conf.write_text(NGINX_CONF.format(prefix=self.prefix, port=self.port))
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    self.prefix + "/",
                    "-e",
                    self.prefix + "/error.log",
                    "-c",
                    str(conf),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal is handled by us, not nginx
            )
            self.base_url = f"http://127.0.0.1:{self.port}"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    read_status(self.base_url, timeout=1)
                    self.worker_pid = self._find_worker_pid()
                    return self
                except OSError:
                    time.sleep(0.05)
            last_error = self.error_log_tail()
            self._kill()
        self.stop()
        raise RuntimeError(f"nginx did not start:\n{last_error}")

    def _find_worker_pid(self) -> int | None:
        if self.proc is None:
            return None
        try:
            children = (
                Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            )
            return int(children[0]) if children else None
        except (OSError, ValueError):
            return None

    def error_log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.prefix, "error.log").read_text().splitlines()[-lines:])
        except (OSError, TypeError):
            return ""

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        self._kill()
        prefix, self.prefix = self.prefix, None
        if prefix and os.path.isdir(prefix):
            shutil.rmtree(prefix, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts(extra_packages: tuple[str, ...] = ()) -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    packages = (
        "httpx-extensions",
        "httpx",
        "httpcore",
        "h11",
        "anyio",
        "sniffio",
        "aiohttp",
        *extra_packages,
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": cpu_model(),
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": {name: package_version(name) for name in packages},
    }


def replace_section(path: Path, name: str, body: str, title: str = "# Benchmarks\n") -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->``
    in *path*, appending the section if the markers are missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else title
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: python bench/_common.py serve")
    with Nginx() as server:
        print(
            f"nginx {server.version} at {server.base_url}  "
            f"(status: {server.base_url}/nginx_status); Ctrl-C stops it"
        )
        try:
            while server.proc and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
