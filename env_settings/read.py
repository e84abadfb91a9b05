"""Typed readers of one setting each; every error names the key, never more than its value."""

from __future__ import annotations

import os
from collections.abc import Mapping

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


def boolean(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{key} must be true or false, got {raw!r}")


def required(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "").strip()
    if not value:
        raise SettingsError(f"{key} is required but not set")
    return value


def readable_file(env: Mapping[str, str], key: str) -> str:
    """The path, or "" when unset; a path that names no file fails at start, not at first use."""
    path = env.get(key, "").strip()
    if path and not os.path.isfile(path):
        raise SettingsError(f"{key} names no readable file: {path!r}")
    return path
