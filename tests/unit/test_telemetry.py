"""The pure pieces of metrics and tracing: size classes, clock skew, process counting, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from accounts_service import settings as accounts_settings
from accounts_service import tracing as accounts_tracing
from grpc_telemetry import tracing as shared_tracing
from imaging_service import settings as imaging_settings
from imaging_service.metrics import Metrics, RenderProcesses, seconds_since, source_class

BASE = {"INTERNAL_TOKEN": "t"}


@pytest.mark.parametrize(
    ("megapixels", "label"),
    [(0.0, "0-0.5"), (0.5, "0-0.5"), (0.51, "0.5-2"), (2.0, "0.5-2"), (7.9, "2-8"),
     (24.0, "8-24"), (24.1, "24+"), (50.0, "24+")],
)  # fmt: skip
def test_source_class(megapixels: float, label: str) -> None:
    assert source_class(megapixels) == label


def test_seconds_since_never_goes_negative_when_clocks_disagree() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert seconds_since(now - timedelta(seconds=2.5), now) == 2.5
    assert seconds_since(now + timedelta(seconds=1), now) == 0.0


def test_render_processes_count_replacements_not_the_pool_filling_up() -> None:
    metrics = Metrics(CollectorRegistry())
    views = iter([[], [10], [10, 11], [10, 11], [12, 11], [12], [12, 13], [14, 15]])
    processes = RenderProcesses(lambda: next(views), 2, metrics.render_processes_replaced)

    def replaced() -> float:
        value = metrics.registry.get_sample_value("imaging_render_process_replacements_total")
        assert value is not None
        return value

    seen = []
    for _ in range(8):
        processes.look()
        seen.append(replaced())
    # 10 and 11 fill the pool; 12 replaces 10, 13 replaces 11 (died), 14 and 15 both.
    assert seen == [0, 0, 0, 0, 1, 1, 2, 4]


def test_metrics_ports_have_defaults_zero_turns_them_off_and_bad_values_fail() -> None:
    assert accounts_settings.from_env(BASE).metrics_port == 9101
    assert imaging_settings.from_env(BASE).metrics_port == 9102
    assert accounts_settings.from_env(BASE | {"ACCOUNTS_METRICS_PORT": "0"}).metrics_port == 0
    assert imaging_settings.from_env(BASE | {"IMAGING_METRICS_PORT": "0"}).metrics_port == 0
    with pytest.raises(accounts_settings.SettingsError, match="ACCOUNTS_METRICS_PORT"):
        accounts_settings.from_env(BASE | {"ACCOUNTS_METRICS_PORT": "70000"})
    with pytest.raises(imaging_settings.SettingsError, match="IMAGING_METRICS_PORT"):
        imaging_settings.from_env(BASE | {"IMAGING_METRICS_PORT": "-1"})


def test_tracing_is_off_unless_an_otlp_endpoint_with_a_scheme_is_set() -> None:
    for module in (accounts_settings, imaging_settings):
        assert module.from_env(BASE).otlp_endpoint == ""
        on = module.from_env(BASE | {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
        assert on.otlp_endpoint == "http://collector:4317"
        with pytest.raises(module.SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
            module.from_env(BASE | {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"})
    assert shared_tracing.setup("", "accounts_service", {}) == shared_tracing.OFF
    assert shared_tracing.setup("", "imaging_service", {}) == shared_tracing.OFF
    assert shared_tracing.OFF.tracer is None and shared_tracing.OFF.provider is None


def test_without_a_span_there_is_no_traceparent_to_store() -> None:
    assert accounts_tracing.current_traceparent() is None
