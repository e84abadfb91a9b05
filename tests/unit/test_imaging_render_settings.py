"""The imaging settings that bound renders: time budget, megapixels and previews in flight."""

from __future__ import annotations

import pytest

from imaging_service.settings import SettingsError, from_env

BASE = {"INTERNAL_TOKEN": "t", "RENDER_PROCESSES": "3"}


def test_defaults_fit_imaging_in_its_memory_and_pass_50_mp_photos() -> None:
    settings = from_env(BASE)
    assert settings.render_budget_floor_seconds == 5.0
    assert settings.render_budget_seconds_per_megapixel == 0.2
    assert settings.render_max_megapixels_in_flight == 80
    assert settings.render_thumbnails_max_in_flight == 6  # twice the render processes


def test_each_is_read_from_its_variable() -> None:
    settings = from_env(
        BASE
        | {
            "RENDER_BUDGET_FLOOR_SECONDS": "2.5",
            "RENDER_BUDGET_SECONDS_PER_MEGAPIXEL": "0.5",
            "RENDER_MAX_MEGAPIXELS_IN_FLIGHT": "60",
            "RENDER_THUMBNAILS_MAX_IN_FLIGHT": "1",
        }
    )
    assert settings.render_budget_floor_seconds == 2.5
    assert settings.render_budget_seconds_per_megapixel == 0.5
    assert settings.render_max_megapixels_in_flight == 60
    assert settings.render_thumbnails_max_in_flight == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("RENDER_BUDGET_FLOOR_SECONDS", "0"),
        ("RENDER_BUDGET_FLOOR_SECONDS", "soon"),
        ("RENDER_BUDGET_SECONDS_PER_MEGAPIXEL", "-1"),
        ("RENDER_THUMBNAILS_MAX_IN_FLIGHT", "0"),
    ],
)
def test_a_bad_value_is_refused_by_name(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=key):
        from_env(BASE | {key: value})
