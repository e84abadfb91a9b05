"""Shared test images: in $AVATAR_TESTDATA, else ../shared/testdata/images beside the repo.

A missing folder fails the run; it never skips. Tests receive manifest entries through the
parameters named in ``ENTRY_PARAMETERS`` and file bytes from the ``corpus`` fixture.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

Entry = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TESTDATA = REPO_ROOT.parent / "shared" / "testdata" / "images"

# parameter name -> which manifest entries it runs over
ENTRY_PARAMETERS: dict[str, Callable[[Entry], bool]] = {
    "ok_entry": lambda e: e["expected"] == "ok",
    "reject_entry": lambda e: e["expected"] == "reject",
    "orientation_entry": lambda e: "orientation" in e,
    "animation_entry": lambda e: "first_frame" in e,
    "hidden_key_entry": lambda e: "hidden_key_colour" in e,
    "colour_check_entry": lambda e: "colour_check" in e,
}


@cache
def testdata_dir() -> Path:
    path = Path(os.environ.get("AVATAR_TESTDATA") or DEFAULT_TESTDATA)
    if not (path / "manifest.json").is_file():
        pytest.fail(f"shared test images not found in {path} (set AVATAR_TESTDATA)", pytrace=False)
    return path


@cache
def manifest() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((testdata_dir() / "manifest.json").read_text())
    return result


@cache
def read(name: str) -> bytes:
    """A corpus file's bytes; files too big to commit are built with generate.py's recipe."""
    if (testdata_dir() / name).is_file():
        return (testdata_dir() / name).read_bytes()
    built: bytes = _generator().build_at_test_time(name)
    return built


@cache
def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("corpus_generate", testdata_dir() / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    dont_write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:  # keep __pycache__ out of the shared folder
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write_bytecode
    return module


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for parameter, wanted in ENTRY_PARAMETERS.items():
        if parameter in metafunc.fixturenames:
            entries = [e for e in manifest()["files"] if wanted(e)]
            metafunc.parametrize(parameter, entries, ids=[e["name"] for e in entries])


@pytest.fixture(scope="session")
def corpus() -> Callable[[str], bytes]:
    """``corpus(name)`` -> that corpus file's bytes, read or built once per session."""
    return read
