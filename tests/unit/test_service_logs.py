"""The JSON log lines both services write (their scrubbing: test_secret_settings.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from service_logs.json_lines import JsonFormatter, configure


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    saved = (root.level, list(root.handlers), urllib3.level)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    urllib3.setLevel(saved[2])


def test_extra_fields_become_keys_and_record_attributes_do_not() -> None:
    record = logging.makeLogRecord({"msg": "stored %s", "args": ("x",), "levelname": "INFO"})
    record.__dict__.update(user_id="u-1", taskName="Task-7")
    entry = json.loads(JsonFormatter().format(record))
    assert set(entry) == {"time", "level", "logger", "msg", "user_id"}
    assert (entry["msg"], entry["user_id"]) == ("stored x", "u-1")


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize(("level", "urllib3"), [("INFO", "ERROR"), ("CRITICAL", "CRITICAL")])
def test_urllib3_retry_warnings_stay_out_and_never_below_the_level(
    level: str, urllib3: str
) -> None:
    configure(level)
    assert logging.getLevelName(logging.getLogger().level) == level
    assert logging.getLevelName(logging.getLogger("urllib3").level) == urllib3
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
