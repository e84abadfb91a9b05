"""The shared setting readers: each value rule, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from env_settings import SettingsError, boolean, readable_file, required

SPELLINGS = [("1", True), ("Yes", True), (" on ", True), ("0", False), ("FALSE", False)]


@pytest.mark.parametrize(("raw", "value"), SPELLINGS)
def test_booleans_in_the_usual_spellings(raw: str, value: bool) -> None:
    assert boolean({"S3_SECURE": raw}, "S3_SECURE", not value) is value


def test_unset_or_blank_takes_the_default_and_nonsense_is_refused() -> None:
    assert boolean({}, "S3_SECURE", True) is True
    assert boolean({"S3_SECURE": "  "}, "S3_SECURE", False) is False
    with pytest.raises(SettingsError, match="S3_SECURE must be true or false, got 'maybe'"):
        boolean({"S3_SECURE": "maybe"}, "S3_SECURE", False)


def test_a_required_value_must_be_there() -> None:
    assert required({"INTERNAL_TOKEN": " t "}, "INTERNAL_TOKEN") == "t"
    with pytest.raises(SettingsError, match="INTERNAL_TOKEN is required but not set"):
        required({"INTERNAL_TOKEN": " "}, "INTERNAL_TOKEN")


def test_a_file_setting_names_an_existing_file(tmp_path: Path) -> None:
    present = tmp_path / "ca.pem"
    present.write_text("x")
    assert readable_file({"CA": str(present)}, "CA") == str(present)
    assert readable_file({}, "CA") == ""
    with pytest.raises(SettingsError, match="CA names no readable file"):
        readable_file({"CA": str(tmp_path / "missing.pem")}, "CA")
