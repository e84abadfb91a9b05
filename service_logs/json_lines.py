"""One JSON object per log line; extra fields (user_id, event_id, ...) go in as keys.

`time` is RFC 3339 in UTC with milliseconds (`2026-12-06T12:34:56.789Z`). With tracing on, a line
written inside a recording span carries its `trace_id` and `span_id` (hex, as in W3C
`traceparent`), so a log backend can link it to the trace.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

from credentials.scrub import Scrubber

try:
    from opentelemetry.trace import format_span_id, format_trace_id, get_current_span
except ImportError:  # pragma: no cover - both services install it; a tool may not
    get_current_span = None  # type: ignore[assignment]

# The LogRecord's own attributes; any other key in its __dict__ came in through ``extra``.
# taskName is one from Python 3.12 on.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Each line passes through credentials.scrub.Scrubber with `secrets` (Settings.secrets())
    before it is written. `trace_ids`: look up the current span for each line (tracing is on);
    off, nothing is looked up."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self, secrets: Iterable[str] = (), trace_ids: bool = False) -> None:
        super().__init__()
        self._scrubber = Scrubber(secrets)
        self._trace_ids = trace_ids and get_current_span is not None

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self._trace_ids:
            span = get_current_span()
            if span.is_recording():
                context = span.get_span_context()
                entry["trace_id"] = format_trace_id(context.trace_id)
                entry["span_id"] = format_span_id(context.span_id)
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._scrubber.scrub(json.dumps(entry, default=str))


def configure(level: str, secrets: Iterable[str] = (), trace_ids: bool = False) -> None:
    """JSON lines on stderr at `level`, with `secrets` (Settings.secrets()) never written;
    `trace_ids` when tracing is on."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets, trace_ids))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # urllib3 (under minio) warns on every internal retry, which the storage adapter's own error
    # reports once with the outcome. Never below `level`: the root logger's level does not filter
    # what a child logger passes up to the handler.
    logging.getLogger("urllib3").setLevel(max(logging.ERROR, logging.getLevelName(level)))
