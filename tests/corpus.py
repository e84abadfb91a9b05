"""The shared test images: in $AVATAR_TESTDATA, else ../shared/testdata/images beside the repo.

A missing folder fails the run; it never skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from PIL import features

Entry = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TESTDATA = REPO_ROOT.parent / "shared" / "testdata" / "images"

# manifest reason class -> our failure code
CODES = {
    "empty": "EMPTY",
    "not_an_image": "NOT_AN_IMAGE",
    "truncated": "TRUNCATED",
    "too_many_pixels": "TOO_MANY_PIXELS",
    "too_large_bytes": "TOO_LARGE",
    "unsupported_format": "UNSUPPORTED_FORMAT",
}
# The marker colours of the corpus's test cards and animations (generate.py COLOURS).
MARKERS = {
    "red": (222, 30, 30),
    "green": (30, 180, 50),
    "blue": (35, 70, 225),
    "yellow": (245, 215, 30),
}
# Where to sample each quadrant's colour in a centre-cropped thumbnail (manifest hint).
QUADRANT_SAMPLES = {
    "top_left": (0.27, 0.27),
    "top_right": (0.73, 0.27),
    "bottom_left": (0.27, 0.73),
    "bottom_right": (0.73, 0.73),
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


def codec_available(entry: Entry) -> bool:
    """Whether this Pillow can decode a file that needs an optional codec."""
    if "heif" in entry["codec"]["requires"].lower():
        return importlib.util.find_spec("pillow_heif") is not None
    return bool(features.check_module("avif"))
