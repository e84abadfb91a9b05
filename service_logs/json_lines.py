"""One JSON object per log line; extra fields (user_id, event_id, ...) go in as keys."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import Any

from credentials.scrub import Scrubber

# The LogRecord's own attributes; any other key in its __dict__ came in through ``extra``.
# taskName is one from Python 3.12 on.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Each line passes through credentials.scrub.Scrubber with `secrets` (Settings.secrets())
    before it is written."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._scrubber = Scrubber(secrets)

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
        return self._scrubber.scrub(json.dumps(entry, default=str))


def configure(level: str, secrets: Iterable[str] = ()) -> None:
    """JSON lines on stderr at `level`, with `secrets` (Settings.secrets()) never written."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # urllib3 (under minio) warns on every internal retry, which the storage adapter's own error
    # reports once with the outcome. Never below `level`: the root logger's level does not filter
    # what a child logger passes up to the handler.
    logging.getLogger("urllib3").setLevel(max(logging.ERROR, logging.getLevelName(level)))
