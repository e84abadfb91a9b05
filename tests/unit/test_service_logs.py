"""The JSON log lines both services write (their scrubbing: test_secret_settings.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

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


def line(formatter: JsonFormatter, msg: str = "stored") -> dict[str, str]:
    record = logging.getLogger("test").makeRecord("test", logging.INFO, __file__, 1, msg, (), None)
    entry: dict[str, str] = json.loads(formatter.format(record))
    return entry


@pytest.fixture
def new_york_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local zone far from UTC, so a local timestamp shows."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york_local_time")
def test_time_is_rfc3339_utc_with_milliseconds() -> None:
    created = datetime(2026, 12, 6, 12, 34, 56, 789000, tzinfo=UTC).timestamp()
    record = logging.makeLogRecord({"msg": "x", "created": created, "msecs": 789.0})
    assert json.loads(JsonFormatter().format(record))["time"] == "2026-12-06T12:34:56.789Z"
    before = datetime.now(UTC)
    stamp = line(JsonFormatter())["time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    assert before - timedelta(milliseconds=1) <= datetime.fromisoformat(stamp) <= datetime.now(UTC)


def test_lines_inside_a_recording_span_carry_its_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    formatter = JsonFormatter(trace_ids=True)
    assert {"trace_id", "span_id"}.isdisjoint(line(formatter))  # outside any span
    with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
        inner = trace.get_current_span().get_span_context()
        entry = line(formatter)
    assert entry["trace_id"] == f"{outer.get_span_context().trace_id:032x}"
    assert (entry["trace_id"], entry["span_id"]) == (
        f"{inner.trace_id:032x}",
        f"{inner.span_id:016x}",
    )
    assert {"trace_id", "span_id"}.isdisjoint(line(formatter))  # the span ended


def test_no_trace_ids_with_tracing_off_or_in_a_span_that_is_not_recorded() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request"):
        assert {"trace_id", "span_id"}.isdisjoint(line(JsonFormatter()))
    remote = trace.SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xF067AA0BA902B7, is_remote=True)
    with trace.use_span(trace.NonRecordingSpan(remote)):  # a sampled-out trace
        assert {"trace_id", "span_id"}.isdisjoint(line(JsonFormatter(trace_ids=True)))


@pytest.mark.usefixtures("restored_logging")
async def test_a_service_log_line_in_a_task_or_a_thread_carries_the_span(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("INFO", trace_ids=True)
    log, tracer = logging.getLogger("test.service"), TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        await asyncio.to_thread(log.info, "in a thread")
        await asyncio.create_task(asyncio.to_thread(log.info, "in a task's thread"))
    log.info("after")
    lines = [json.loads(text) for text in capsys.readouterr().err.splitlines()]
    expected = f"{span.get_span_context().trace_id:032x}"
    assert [(entry["msg"], entry.get("trace_id")) for entry in lines] == [
        ("in a thread", expected), ("in a task's thread", expected), ("after", None),
    ]  # fmt: skip
