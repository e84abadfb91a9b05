"""URLs without their credentials, and the credentials they carry."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import fields
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

REDACTED = "[redacted]"  # what stands where a secret was
# A comma followed by a scheme starts the next URL of a list (nats://a:4222,nats://b:4222); other
# commas belong to one URL (postgresql://h1:5432,h2:5433/db).
_NEXT_URL = re.compile(r",(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_KEPT_CONNINFO_KEYS = ("host=", "hostaddr=", "port=", "dbname=")


def redact_url(value: str) -> str:
    """`value` without credentials, for logs: scheme://host:port/path of each URL of a
    comma-separated list, with no user, password, query or fragment (where libpq takes
    `password=` and `sslpassword=`); a key=value connection string keeps host, port and dbname."""
    if "://" not in value:
        return " ".join(p for p in value.split() if p.startswith(_KEPT_CONNINFO_KEYS))
    return ",".join(_redact_one(url) for url in _NEXT_URL.split(value.strip()))


def _redact_one(url: str) -> str:
    scheme, _, rest = url.partition("://")
    before_query = re.split(r"[?#]", rest, maxsplit=1)[0]
    return f"{scheme}://{before_query.rpartition('@')[2]}"


def url_secrets(value: str) -> list[str]:
    """Passwords in the userinfo of each URL of a list, and a user alone (NATS takes that as a
    token)."""
    found = []
    for url in _NEXT_URL.split(value.strip()):
        try:
            parts = urlsplit(url)
            user, password = parts.username, parts.password
        except ValueError:
            continue
        found.append(password if password is not None else (user or ""))
    return [s for s in found if s]


def redacted_repr(instance: DataclassInstance, url_fields: Collection[str]) -> str:
    """`Name(field=value, ...)` of a dataclass for the start-up log line: the fields in
    `url_fields` through redact_url, the others only if declared with repr=True."""
    shown = []
    for f in fields(instance):
        value = getattr(instance, f.name)
        if f.name in url_fields:
            shown.append(f"{f.name}={redact_url(value)!r}")
        elif f.repr:
            shown.append(f"{f.name}={value!r}")
    return f"{type(instance).__name__}({', '.join(shown)})"
