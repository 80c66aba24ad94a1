"""What ``import httpx_extensions`` loads: not pyspnego and its crypto, not the CLI's click and
rich, not the testing servers (issue 15). Each check runs in a fresh interpreter, since this
process has long imported everything.

httpx itself imports click and rich when they are installed (its own command line), so a
plain look at ``sys.modules`` cannot tell whether *we* imported them. The child therefore
refuses those two (as in an environment without httpx's ``cli`` extra, which httpx handles)
and records every attempt to import a watched module that happens after ``import httpx``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Imported only on first use of what needs them.
WATCHED = (
    "spnego",
    "cryptography",
    "gssapi",
    "krb5",
    "click",
    "rich",
    "httpx_extensions.testing",
    "httpx_extensions._auth",
    "httpx_extensions._cli",
)
# httpx imports these when they are installed; refused in the child (see the docstring).
REFUSED = ("click", "rich")

_PRELUDE = f"""
import importlib.abc, json, sys

WATCHED = {WATCHED!r}
REFUSED = {REFUSED!r}
attempts = []
recording = False

def watched(name):
    return any(name == w or name.startswith(w + ".") for w in WATCHED)

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if recording and watched(name):
            attempts.append(name)
        if name.partition(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"{{name}} is refused by the test", name=name)
        return None

sys.meta_path.insert(0, Watch())
import httpx
recording = True

def loaded():
    return sorted(name for name in sys.modules if watched(name))
"""


def run_child(code: str) -> dict[str, object]:
    """Run ``code`` after the prelude in a fresh interpreter; it prints one JSON object."""
    result = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def test_imports_package_loads_no_auth_cli_or_testing_modules() -> None:
    data = run_child(
        """
        import httpx_extensions
        from httpx_extensions import ExClient, ExTransport, AuthenticationError, CONN_ID
        client = ExClient()
        print(json.dumps({"attempts": attempts, "loaded": loaded()}))
        """
    )
    assert data == {"attempts": [], "loaded": []}


def test_imports_auth_names_load_pyspnego_on_first_use() -> None:
    data = run_child(
        """
        import logging
        import httpx_extensions
        before = loaded()
        auth = httpx_extensions.NTLMAuth("EXAMPLE\\\\alice", "pw")
        from httpx_extensions import NegotiateAuth
        from httpx_extensions._auth import AuthenticationError
        print(json.dumps({
            "before": before,
            "spnego": "spnego" in sys.modules,
            "auth": type(auth).__name__,
            "same": NegotiateAuth is httpx_extensions._auth.NegotiateAuth,
            "error": AuthenticationError is httpx_extensions.AuthenticationError,
            "spnego_level": logging.getLogger("spnego").level,
        }))
        """
    )
    assert data == {
        "before": [],
        "spnego": True,
        "auth": "NTLMAuth",
        "same": True,
        "error": True,
        # pyspnego logs whole tokens at DEBUG: quiet as soon as it is imported.
        "spnego_level": 20,
    }


def test_imports_spnego_level_chosen_by_the_application_is_kept() -> None:
    data = run_child(
        """
        import logging
        logging.getLogger("spnego").setLevel(logging.WARNING)
        import httpx_extensions
        httpx_extensions.NegotiateAuth
        print(json.dumps({"level": logging.getLogger("spnego").level}))
        """
    )
    assert data == {"level": 30}


def test_imports_httpcore_log_redaction_is_installed_by_the_package_import() -> None:
    # httpx users' routes that httpcore serves (mounts, respx passthrough) must have their
    # auth headers blanked in httpcore's DEBUG trace without any auth name being touched.
    data = run_child(
        """
        import logging
        import httpx_extensions
        record = logging.LogRecord(
            "httpcore.http11", logging.DEBUG, "trace.py", 1,
            "send_request_headers.started request=<Request [b'GET']> headers="
            "[(b'Host', b'example.com'), (b'Authorization', b'NTLM TlRMTVNTUAABAAAA')]",
            None, None,
        )
        kept = [f.filter(record) for f in logging.getLogger("httpcore.http11").filters]
        proxy = len(logging.getLogger("httpcore.proxy").filters)
        print(json.dumps({"kept": kept, "msg": record.getMessage(), "proxy": proxy,
                          "loaded": loaded()}))
        """
    )
    assert data["kept"] == [True]
    assert data["proxy"] == 1
    assert data["loaded"] == []
    message = str(data["msg"])
    assert "TlRMTVNTUAABAAAA" not in message
    assert "(b'Authorization', b'<redacted>')" in message
    assert "(b'Host', b'example.com')" in message


def test_imports_unknown_name_is_an_attribute_error_naming_it() -> None:
    import httpx_extensions

    with pytest.raises(AttributeError, match="'httpx_extensions' has no attribute 'NTLMAuthh'"):
        httpx_extensions.NTLMAuthh  # noqa: B018
    assert not hasattr(httpx_extensions, "_LAZY_missing")


def test_imports_dir_and_star_import_show_every_public_name() -> None:
    data = run_child(
        """
        import httpx_extensions
        listed = dir(httpx_extensions)
        namespace = {}
        exec("from httpx_extensions import *", namespace)
        print(json.dumps({
            "missing_from_dir": sorted(set(httpx_extensions.__all__) - set(listed)),
            "star": sorted(n for n in namespace if n != "__builtins__"),
            "all": sorted(httpx_extensions.__all__),
        }))
        """
    )
    assert data["missing_from_dir"] == []
    assert data["star"] == data["all"]


def test_imports_cli_help_loads_no_auth_or_demo_server() -> None:
    # `httpx-extensions --help` (and each command's) must not pay for pyspnego and the demo
    # server: the commands import them when they run. click and rich are the CLI's own here.
    code = textwrap.dedent(
        """
        import contextlib, io, json, sys
        from httpx_extensions._cli import main
        out = io.StringIO()
        codes = []
        for args in (["--help"], ["probe", "--help"], ["demo", "--help"], ["docs", "--path"]):
            with contextlib.redirect_stdout(out):
                try:
                    codes.append(main(args))
                except SystemExit as exc:
                    codes.append(exc.code)
        heavy = sorted(
            name for name in sys.modules
            if name.partition(".")[0] in ("spnego", "cryptography", "gssapi", "krb5")
            or name.startswith(("httpx_extensions.testing", "httpx_extensions._auth",
                                "httpx_extensions._cli._demo", "httpx_extensions._cli._probe"))
        )
        usage = out.getvalue().count("Usage:")
        print(json.dumps({"codes": codes, "heavy": heavy, "usage": usage}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data == {"codes": [0, 0, 0, 0], "heavy": [], "usage": 3}


def test_imports_httpx2_flavour_never_imports_httpx_or_httpcore(tmp_path: Path) -> None:
    # An httpx2 user's environment (openai 3.x) has no httpx: the child refuses httpx,
    # httpcore and certifi, then imports the httpx2 flavour, its lazy names and the testing
    # servers, and makes an NTLM request to a loopback IIS-like server.
    code = textwrap.dedent(
        f"""
        import asyncio, importlib.abc, json, sys

        REFUSED = ("httpx", "httpcore", "certifi")
        attempts = []

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in REFUSED:
                    attempts.append(name)
                    raise ModuleNotFoundError(f"{{name}} is refused by the test", name=name)
                return None

        sys.meta_path.insert(0, Refuse())
        import httpx_extensions.httpx2 as flavour
        from httpx_extensions.httpx2 import ExClient, NTLMAuth, NegotiateAuth, Proxy
        from httpx_extensions.httpx2 import AuthenticationError, PoolTimeout
        from httpx_extensions.testing import IISLikeServer, write_user_file
        import httpx2

        async def main():
            users = write_user_file({str(tmp_path / "users.txt")!r},
                                    [("EXAMPLE", "alice", "Passw0rd")])
            with IISLikeServer(user_file=users) as server:
                async with ExClient(auth=NTLMAuth("EXAMPLE\\\\alice", "Passw0rd")) as client:
                    response = await client.get(server.url + "/")
                    return response.status_code, response.json()["user"]

        status, user = asyncio.run(main())
        print(json.dumps({{
            "attempts": attempts,
            "status": status,
            "user": user,
            "base_is_httpx2s": ExClient.__mro__[1] is httpx2.AsyncClient,
            "timeout_is_httpx2s": issubclass(PoolTimeout, httpx2.PoolTimeout),
            "auth_error_is_httpx2s": issubclass(AuthenticationError, httpx2.HTTPError),
            "same_conn_id": flavour.CONN_ID == "conn_id",
            "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in REFUSED),
        }}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data == {
        "attempts": [],
        "status": 200,
        "user": "EXAMPLE\\alice",
        "base_is_httpx2s": True,
        "timeout_is_httpx2s": True,
        "auth_error_is_httpx2s": True,
        "same_conn_id": True,
        "loaded": [],
    }
