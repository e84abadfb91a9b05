"""The standard OTEL_* variables, as the OpenTelemetry spec says (no collector: nothing is sent)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import sampling

from accounts_service.settings import SettingsError
from grpc_telemetry import propagation, tracing

ENDPOINT = "http://127.0.0.1:4317"
TRACE_ID, SPAN_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
SDK_READ = ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG")  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The variables the SDK reads from the process environment unset, and the process's
    propagators back to the default afterwards."""
    for name in SDK_READ:
        monkeypatch.delenv(name, raising=False)
    yield
    propagation.configure({})


@pytest.fixture
def started() -> Iterator[list[tracing.Tracing]]:
    """Tracing set up by the test, shut down after it (nothing buffered, so at once)."""
    made: list[tracing.Tracing] = []
    yield made
    for traces in made:
        assert traces.provider is not None
        traces.provider.shutdown()


def setup(made: list[tracing.Tracing], env: dict[str, str]) -> tracing.Tracing:
    traces = tracing.setup(ENDPOINT, "imaging_service", env, SettingsError)
    if traces.provider is not None:
        made.append(traces)
    return traces


def service_name(traces: tracing.Tracing) -> object:
    assert traces.provider is not None
    return traces.provider.resource.attributes["service.name"]


@pytest.mark.parametrize(
    ("endpoint", "env", "on"),
    [
        (ENDPOINT, {}, True),
        ("", {}, False),
        ("", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        (ENDPOINT, {"OTEL_SDK_DISABLED": "true"}, False),
        (ENDPOINT, {"OTEL_SDK_DISABLED": " TRUE "}, False),
        (ENDPOINT, {"OTEL_SDK_DISABLED": "1"}, True),  # the spec: only "true" disables
        (ENDPOINT, {"OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_an_endpoint_turns_tracing_on_and_otel_sdk_disabled_off(
    endpoint: str, env: dict[str, str], on: bool, started: list[tracing.Tracing]
) -> None:
    assert tracing.enabled(endpoint, env) is on
    traces = tracing.setup(endpoint, "accounts_service", env, SettingsError)
    if traces.provider is not None:
        started.append(traces)
    assert (traces.tracer is not None) is on
    assert (traces == tracing.OFF) is not on


def test_the_service_name_is_ours_unless_the_environment_names_one(
    monkeypatch: pytest.MonkeyPatch, started: list[tracing.Tracing]
) -> None:
    assert service_name(setup(started, {})) == "imaging_service"
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "service.name=thumbs,deployment.environment=prod"
    )
    traces = setup(started, {})
    assert service_name(traces) == "thumbs"
    assert traces.provider is not None
    assert traces.provider.resource.attributes["deployment.environment"] == "prod"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "thumbnailer")  # wins over OTEL_RESOURCE_ATTRIBUTES
    assert service_name(setup(started, {})) == "thumbnailer"


def test_the_sampler_is_the_one_otel_traces_sampler_names(
    monkeypatch: pytest.MonkeyPatch, started: list[tracing.Tracing]
) -> None:
    traces = setup(started, {})
    assert traces.provider is not None
    assert traces.provider.sampler is sampling.DEFAULT_ON  # parentbased_always_on
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    traces = setup(started, {})
    assert traces.provider is not None
    assert isinstance(traces.provider.sampler, sampling.TraceIdRatioBased)
    assert traces.provider.sampler.rate == 0.25


def context_of(carrier: dict[str, str]) -> trace.SpanContext:
    return trace.get_current_span(propagation.extract(carrier)).get_span_context()


def test_propagators_are_tracecontext_and_baggage_unless_otel_propagators_names_others() -> None:
    assert propagation.configure({}).fields == {"traceparent", "tracestate", "baggage"}
    assert context_of({"traceparent": TRACEPARENT}).trace_id == TRACE_ID
    assert propagation.configure({"OTEL_PROPAGATORS": "baggage"}).fields == {"baggage"}
    assert not context_of({"traceparent": TRACEPARENT}).is_valid
    assert propagation.configure({"OTEL_PROPAGATORS": "tracecontext,none"}).fields == set()
    assert propagation.configure({"OTEL_PROPAGATORS": " tracecontext "}).fields == {
        "traceparent", "tracestate",
    }  # fmt: skip
    carrier: dict[str, str] = {}
    with trace.use_span(trace.NonRecordingSpan(context_of({"traceparent": TRACEPARENT}))):
        propagation.inject(carrier)
    assert carrier == {"traceparent": TRACEPARENT}


@pytest.mark.parametrize(
    ("value", "named"),
    [("tracecontext,b3", "'b3' (install opentelemetry-propagator-b3)"),
     ("xray", "'xray' (install opentelemetry-propagator-aws-xray)"),
     ("tracecontxt", "'tracecontxt' (misspelled or not installed)")],
)  # fmt: skip
def test_a_propagator_that_is_not_installed_stops_the_start_naming_it(
    value: str, named: str
) -> None:
    with pytest.raises(SettingsError, match=r"^OTEL_PROPAGATORS: no propagator ") as raised:
        tracing.setup(ENDPOINT, "accounts_service", {"OTEL_PROPAGATORS": value}, SettingsError)
    assert str(raised.value).endswith(named)
    with pytest.raises(SettingsError, match="OTEL_PROPAGATORS"):  # also with tracing off
        tracing.setup("", "accounts_service", {"OTEL_PROPAGATORS": value}, SettingsError)
