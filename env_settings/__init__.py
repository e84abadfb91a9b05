"""Reading settings from an environment mapping, shared by both services: the error that names a
bad key, and the readers whose rules must not differ between them (booleans, required values,
files)."""

from env_settings.read import SettingsError, boolean, readable_file, required

__all__ = ["SettingsError", "boolean", "readable_file", "required"]
