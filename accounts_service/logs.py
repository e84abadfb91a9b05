"""One JSON object per log line; extra fields (user_id, event_id, ...) go in as keys."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from accounts_service.settings import REDACTED

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

# Credentials in any URL a library puts into a message (scheme://user:password@host).
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@\"']+@")
# Shorter values would blank out ordinary words, and are no secret anyway.
_MIN_SECRET_CHARS = 4


class JsonFormatter(logging.Formatter):
    """The last line of defence: a secret value that reaches a log line anyway (in a library's
    error message, say) is replaced, as it is, JSON-escaped or percent-encoded, and so is the
    userinfo of any URL. Nothing should depend on it: our own messages carry no secret."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        forms = {
            form
            for secret in secrets
            if len(secret) >= _MIN_SECRET_CHARS
            for form in (secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote(secret))
        }
        self._secrets = sorted(forms, key=len, reverse=True)  # longest first: no partial leftovers

    def scrub(self, line: str) -> str:
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        return _URL_USERINFO.sub(rf"\1{REDACTED}@", line)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.scrub(json.dumps(entry, default=str))


def configure(level: str, secrets: Iterable[str] = ()) -> None:
    """JSON lines on stderr at `level`, with `secrets` (Settings.secrets()) never written."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # urllib3 (under minio) warns on every internal retry; our own line reports the outcome.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
