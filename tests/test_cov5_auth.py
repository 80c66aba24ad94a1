"""``_auth``'s first import quiets pyspnego's logger unless the application chose its level.

``tests/test_imports.py`` checks it in a fresh interpreter, which coverage does not follow;
here the module's code runs again in this one, as a first import does: a new module object
from the same file, in ``sys.modules`` while it runs (the loaded one is put back after), with
the ``spnego`` logger as a fresh interpreter has it and as an application that set a level
has it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator

import pytest


def _import_auth_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.find_spec("httpx_extensions._auth")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)


@pytest.fixture
def spnego_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("spnego")
    level = logger.level
    try:
        yield logger
    finally:
        logger.setLevel(level)


def test_cov5_auth_import_sets_an_unset_spnego_logger_to_info(
    spnego_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    spnego_logger.setLevel(logging.NOTSET)  # as in a fresh interpreter
    _import_auth_afresh(monkeypatch)
    assert spnego_logger.level == logging.INFO  # so DEBUG logging shows no token


@pytest.mark.parametrize("level", [logging.DEBUG, logging.WARNING])
def test_cov5_auth_import_keeps_the_level_an_application_chose(
    spnego_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    spnego_logger.setLevel(level)
    _import_auth_afresh(monkeypatch)
    assert spnego_logger.level == level
