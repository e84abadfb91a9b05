"""Shared test images: in $AVATAR_TESTDATA, else ../shared/testdata/images beside the repo.

A missing folder fails the run; it never skips. Tests receive manifest entries through the
parameters named in ``ENTRY_PARAMETERS`` and file bytes from the ``corpus`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.corpus import Entry, manifest, read

# parameter name -> which manifest entries it runs over
ENTRY_PARAMETERS: dict[str, Callable[[Entry], bool]] = {
    "ok_entry": lambda e: e["expected"] == "ok",
    "reject_entry": lambda e: e["expected"] == "reject",
    "orientation_entry": lambda e: "orientation" in e,
    "animation_entry": lambda e: "first_frame" in e,
    "hidden_key_entry": lambda e: "hidden_key_colour" in e,
    "colour_check_entry": lambda e: "colour_check" in e,
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for parameter, wanted in ENTRY_PARAMETERS.items():
        if parameter in metafunc.fixturenames:
            entries = [e for e in manifest()["files"] if wanted(e)]
            metafunc.parametrize(parameter, entries, ids=[e["name"] for e in entries])


@pytest.fixture(scope="session")
def corpus() -> Callable[[str], bytes]:
    """``corpus(name)`` -> that corpus file's bytes, read or built once per session."""
    return read
