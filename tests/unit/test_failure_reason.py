"""Failure reasons the worker reports are ones accounts accepts, whatever the error said."""

from __future__ import annotations

from accounts_service.results import checked_failure
from imaging_service.accounts_client import MAX_REASON_CHARS, printable


def test_control_characters_become_spaces_and_accounts_accepts_the_reason() -> None:
    reason = "cannot identify image\nfile b'\\x00'\x00\x1b[31m\tred"
    cleaned = printable(reason)
    assert cleaned == "cannot identify image file b'\\x00'  [31m red"
    assert checked_failure("TRUNCATED", cleaned) == ("TRUNCATED", cleaned)


def test_long_reasons_are_cut_to_what_accounts_keeps() -> None:
    assert len(printable("x" * 5000)) == MAX_REASON_CHARS
